"""Contract §9.1 to §9.3 (one exchange per refresh token, persist before anything else) at
the places a mutation audit of the unit tier found unguarded: compare-and-swap on every
Secret write, two links on one Secret, the writer's own checks, a cancelled persist, the
lease length, the half-lifetime bound after a restart, and provider dialects read by
the real answer reader. Each test names the mutant it kills in docs/mutation.md.

The behaviour tests set ``allow_unconditional`` so that a write without a
``resourceVersion`` reaches the fake API server and shows its effect (by default the
fake refuses it outright)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping
from typing import Any

from externalauth.engine.writing import ClaimState
from externalauth.model import claims
from externalauth.model.names import CLAIM_ANNOTATION, DEAD_GRANT_ANNOTATION
from externalauth.model.secure import SecretStr
from tests.unit.engine.fakes import FakeProvider, answer, b64, error, success
from tests.unit.engine.rig import LINK, SECRET, Rig, run, until

HOUR = 3600.0


# --- every Secret write is a compare-and-swap (M01, M22, M23) ---------------------------
@run
async def test_every_secret_write_carries_the_version_it_was_based_on() -> None:
    """Claim, persist and format write each name the resourceVersion they were decided on
    (the Secret's version at that moment: nobody else wrote in between)."""
    rig = Rig()
    await rig.add_provider()
    rig.add_secret()
    rig.add_link(outputFormats=["netrc"])
    await rig.reconcile()  # the format keys, then (due) claim + exchange + persist
    rig.kube.edit_secret(SECRET, {"data": {"note": b64("x")}})
    rig.engine.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    rig.provider.answer = lambda rt, n: answer(503)
    rig.request_refresh("again")
    await rig.reconcile()  # claim, a failed exchange, release
    kinds = [w.kind for w in rig.kube.writes]
    assert {"claim", "persist", "release"} <= set(kinds), kinds
    assert [(w.kind, w.stored_version) for w in rig.kube.writes] == [
        (w.kind, w.resource_version) for w in rig.kube.writes]


@run
async def test_a_claim_that_lost_the_race_to_another_replica_sends_nothing() -> None:
    """Our cached Secret has no claim; another replica claims it just before our write.
    Our claim names the version we read: 409, and the refresh token stays unsent here."""
    rig = Rig()
    rig.kube.allow_unconditional = True
    await rig.standard()
    theirs = f"other;{rig.clock.now().timestamp() + 50:.0f}"

    def other_claims_first(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        if CLAIM_ANNOTATION in (patch.get("metadata") or {}).get("annotations", {}) and not rig.kube.claim(key):
            rig.kube.edit_secret(key, {"metadata": {"annotations": {CLAIM_ANNOTATION: theirs}}})

    rig.kube.before_secret_patch = other_claims_first
    await rig.reconcile()
    assert ([], theirs) == (rig.provider.exchanged, rig.kube.claim(SECRET))
    assert ["claim ns/tok 409", "get ns/tok"] == rig.steps("claim", "get", full=True)


@run
async def test_a_release_does_not_delete_the_claim_another_replica_took_meanwhile() -> None:
    """Our exchange failed after our lease ran out and another replica claimed the Secret:
    our release is based on our claim's version, so it is refused and theirs stays."""
    rig = Rig()
    rig.kube.allow_unconditional = True
    await rig.standard()
    theirs = ""

    def slow_failure_while_another_claims(rt: str, n: int) -> Any:
        nonlocal theirs
        rig.clock.advance(61)
        theirs = f"other;{rig.clock.now().timestamp() + 60:.0f}"
        rig.kube.edit_secret(SECRET, {"metadata": {"annotations": {CLAIM_ANNOTATION: theirs}}})
        return answer(503)

    rig.provider.answer = slow_failure_while_another_claims
    await rig.reconcile()
    assert theirs == rig.kube.claim(SECRET)
    assert ["release ns/tok 409"] == rig.steps("release", full=True)


@run
async def test_a_format_write_never_pairs_an_old_token_with_a_newer_one() -> None:
    """The format keys are rendered for the access token we saw; if another writer stored
    a new token meanwhile, the write is refused (409) instead of putting the old token's
    netrc beside the new access_token."""
    rig = Rig()
    rig.kube.allow_unconditional = True
    await rig.add_provider()
    rig.add_secret(expires_in=8 * HOUR)
    rig.add_link(outputFormats=["netrc"])

    def another_refresh_lands_first(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        if "netrc" in (patch.get("data") or {}) and rig.kube.stored(key, "access_token") == "access-0":
            rig.kube.edit_secret(key, {"data": {"access_token": b64("theirs"), "refresh_token": b64("their-rt")}})

    rig.kube.before_secret_patch = another_refresh_lands_first
    await rig.reconcile()
    assert ["formats ns/tok 409"] == rig.steps("formats", full=True)
    assert "access-0" not in (rig.kube.stored(SECRET, "netrc") or "")
    await rig.reconcile()  # decides again on the current token
    assert "theirs" in (rig.kube.stored(SECRET, "netrc") or "")


# --- two links on one Secret (M13, M18) ----------------------------------------------
@run
async def test_two_links_on_one_secret_exchange_its_refresh_token_once() -> None:
    """Both links find the Secret due at once. The second waits for the first's refresh
    (a per-Secret lock), then finds a new refresh token stored and sends nothing: the
    spent one is never sent again (a replay revokes the grant)."""
    rig = Rig()
    await rig.standard()
    rig.add_link("l2", secret="tok")
    rig.provider.gate = gate = asyncio.Event()
    first = asyncio.create_task(rig.reconcile(LINK))
    await until(lambda: rig.provider.exchanged, tasks=[first])
    second = asyncio.create_task(rig.reconcile(("ns", "l2")))
    # The second link is either queued behind the first (right) or sending (wrong).
    await until(lambda: rig.engine.writer.waiting(SECRET) == 2 or len(rig.provider.exchanged) == 2,
                tasks=[first, second])
    gate.set()
    await asyncio.gather(first, second)
    assert ["refresh-0"] == rig.provider.exchanged
    assert ("access-1", "refresh-1") == (rig.kube.stored(SECRET, "access_token"),
                                         rig.kube.stored(SECRET, "refresh_token"))
    assert ["claim", "exchange", "persist"] == rig.steps("claim", "exchange", "persist")


@run
async def test_a_claim_for_a_refresh_token_the_secret_no_longer_holds_is_not_taken() -> None:
    """The writer's own check: the Secret now holds another refresh token (someone
    refreshed it since the decision), so there is nothing to claim and nothing is written."""
    rig = Rig()
    await rig.standard()
    rig.kube.edit_secret(SECRET, {"data": {"refresh_token": b64("refresh-new")}})
    rig.engine.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    result = await rig.engine.writer.claim(SECRET, SecretStr("refresh-0"))
    assert (ClaimState.CHANGED, []) == (result.state, rig.kube.writes)


# --- the writer's own live-claim check (M09b) ----------------------------------------
@run
async def test_the_writer_does_not_claim_over_another_replicas_live_claim() -> None:
    """Whatever the decision said, the claim itself defers to a live claim of another
    replica it finds on the Secret (the watch may have brought it after the decision)."""
    rig = Rig()
    until_ = rig.clock.now().timestamp() + 40
    await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{until_:.0f}"})
    result = await rig.engine.writer.claim(SECRET, SecretStr("refresh-0"))
    assert (ClaimState.HELD_ELSEWHERE, []) == (result.state, rig.kube.writes)
    assert result.claim is not None and (result.claim.holder, result.claim.until) == ("other", until_ // 1)


# --- a cancelled reconcile does not lose the token (M15) ------------------------------
@run
async def test_a_reconcile_cancelled_mid_persist_still_stores_the_new_token() -> None:
    """The provider answered (the old refresh token is spent); the reconcile is cancelled
    (shutdown, a deleted link) while the Secret write is in flight: the write goes on, and
    draining the writer waits for it."""
    rig = Rig()
    await rig.standard()
    rig.kube.persist_gate = gate = asyncio.Event()
    task = asyncio.create_task(rig.reconcile())
    await until(lambda: rig.kube.persists_waiting == 1, tasks=[task])
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gate.set()
    await rig.engine.writer.drain(grace=5.0)
    assert ("access-1", "refresh-1", None) == (rig.kube.stored(SECRET, "access_token"),
                                               rig.kube.stored(SECRET, "refresh_token"), rig.kube.claim(SECRET))


# --- the lease (M21) -----------------------------------------------------------------
@run
async def test_a_crashed_replicas_claim_holds_for_a_minute_then_is_taken_over() -> None:
    """Replica A claims and never answers (it died mid-exchange). Replica B keeps off the
    Secret while A's lease runs (60 s, Settings.claim_lease) and takes over just after."""
    rig = Rig()
    await rig.standard()
    rig.provider.gate = asyncio.Event()  # A's exchange never returns
    a = asyncio.create_task(rig.reconcile())
    await until(lambda: rig.provider.exchanged, tasks=[a])
    b_provider = FakeProvider(rig.journal, rig.clock)
    b = rig.replica("b", b_provider)
    await rig.show(b)
    rig.clock.advance(59)
    b.scheduler.forget(LINK)
    await b.reconcile_link(LINK)
    assert [] == b_provider.exchanged
    rig.clock.advance(2)
    await b.reconcile_link(LINK)
    assert ["refresh-0"] == b_provider.exchanged
    assert "access-1" == rig.kube.stored(SECRET, "access_token")
    a.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await a


# --- the half-lifetime bound survives a restart (M19) ----------------------------------
@run
async def test_a_restarted_replica_keeps_the_half_lifetime_bound_from_the_status() -> None:
    """refreshBefore 8h with 8-hour tokens: after a refresh, a replica that starts afresh
    (no memory) learns when the token was issued from status.lastRefreshTime and waits
    for half its lifetime, instead of finding it due at once (replicas would ping-pong)."""
    rig = Rig()
    rig.provider.answer = lambda rt, n: success(f"access-{n}", f"refresh-{n}", lifetime=8 * HOUR)
    await rig.standard(expires_in=8 * HOUR, link={"refreshBefore": "8h"})
    await rig.reconcile()
    assert "lastRefreshTime" in rig.kube.links[LINK]["status"]
    rig.clock.advance(60)
    restarted = rig.replica("restarted")
    await rig.show(restarted)
    restarted.scheduler.forget(LINK)
    await restarted.reconcile_link(LINK)
    assert ["refresh-0"] == rig.provider.exchanged
    wake = restarted.scheduler.when(LINK)
    assert wake is not None and 4 * HOUR - 120 <= (wake - rig.clock.now()).total_seconds() <= 4 * HOUR


# --- answers read by the real reader, through the engine (M03b, M24) -------------------
@run
async def test_a_provider_that_does_not_rotate_keeps_the_refresh_token_in_the_secret() -> None:
    """An answer without refresh_token: the one sent stays valid and stays stored."""
    rig = Rig()
    rig.provider.answer = lambda rt, n: success("access-1", None)
    await rig.standard()
    await rig.reconcile()
    assert ("access-1", "refresh-0") == (rig.kube.stored(SECRET, "access_token"),
                                         rig.kube.stored(SECRET, "refresh_token"))


@run
async def test_gitea_unauthorized_client_is_a_dead_grant_not_a_rejected_client() -> None:
    """Provider dialects reach the engine: Gitea answers a spent refresh token with 400
    unauthorized_client (contract §9.5), which for that type means sign in again; the
    provider's client is not marked rejected."""
    rig = Rig()
    await rig.add_provider(type="gitea", baseURL="https://gitea.test")
    rig.add_secret()
    rig.add_link()
    rig.provider.answer = lambda rt, n: error(400, "unauthorized_client")
    await rig.reconcile()
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")
    assert "conditions" not in (rig.kube.providers["gh"].get("status") or {}) or all(
        c["reason"] != "CredentialsRejected" for c in rig.kube.providers["gh"]["status"]["conditions"])


@run
async def test_github_errors_with_http_200_are_errors() -> None:
    """GitHub answers errors with HTTP 200: a dead grant stays a dead grant, nothing is
    stored from it."""
    rig = Rig()
    await rig.standard()
    before = dict(rig.kube.secrets[SECRET]["data"])
    rig.provider.answer = lambda rt, n: error(200, "bad_refresh_token")
    await rig.reconcile()
    assert before == rig.kube.secrets[SECRET]["data"]
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")


# --- dead-grant verdicts survive a replica change --------------------------------------
@run
async def test_a_replica_started_after_a_dead_grant_does_not_send_the_dead_token_again() -> None:
    """The verdict is in the link's status (a salted digest of the refresh token, never the
    token): a replica that never saw the dead grant leaves the Secret alone, until a new
    sign-in writes another refresh token; then it refreshes and the verdict goes away."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    await rig.reconcile()
    status = rig.kube.links[LINK]["status"]
    assert status.get("deadGrantDigest") and "refresh-0" not in str(status)
    assert "refresh-0" not in str(rig.kube.secrets[SECRET]["metadata"])
    rig.clock.advance(600)
    later = rig.replica("later")
    await rig.show(later)
    later.scheduler.forget(LINK)
    await later.reconcile_link(LINK)
    assert ["refresh-0"] == rig.provider.exchanged
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")
    rig.kube.edit_secret(SECRET, {"data": {"refresh_token": b64("refresh-new")}})  # signed in again
    later.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    rig.provider.answer = lambda rt, n: success("access-new", "refresh-newer")
    later.scheduler.forget(LINK)
    await later.reconcile_link(LINK)
    assert ["refresh-0", "refresh-new"] == rig.provider.exchanged
    assert "deadGrantDigest" not in rig.kube.links[LINK]["status"]
    assert DEAD_GRANT_ANNOTATION not in rig.kube.secrets[SECRET]["metadata"]["annotations"]


def dead_mark(refresh_token: str) -> str:
    """The Secret's externalauth.io/dead-grant for ``refresh_token`` (the fake's Secrets have no uid)."""
    return claims.dead_grant_digest(SecretStr(refresh_token), secret_uid="")


@run
async def test_a_replica_that_waited_for_the_claim_does_not_send_a_token_refused_meanwhile() -> None:
    """Two replicas find the Secret due. Ours claims and is refused (a dead grant); the
    other sees our claim go before it sees the link's status. Our release marks the token
    dead on the Secret in the same write, so the other sends nothing: one call for a dead
    token, cluster-wide (it sent the token again when the verdict reached the status only,
    after the release)."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    other = rig.replica("other")
    await rig.show(other)
    await rig.reconcile()
    assert ["claim", "exchange", "release"] == rig.steps("claim", "exchange", "release")
    annotations = rig.kube.secrets[SECRET]["metadata"]["annotations"]
    assert (None, dead_mark("refresh-0")) == (annotations.get(CLAIM_ANNOTATION), annotations[DEAD_GRANT_ANNOTATION])
    other.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    assert "deadGrantDigest" not in (other.caches.links[LINK].get("status") or {})  # the status lags
    other.scheduler.forget(LINK)
    await other.reconcile_link(LINK)
    assert ["refresh-0"] == rig.provider.exchanged
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")


@run
async def test_a_link_on_a_secret_marked_dead_asks_for_a_sign_in_without_trying_the_token() -> None:
    """A link with no verdict in its status (new, or recreated) on a Secret whose refresh
    token a replica was refused: the mark on the Secret is the verdict. Nothing is claimed
    or sent; the link says ReauthRequired and its status carries the verdict too."""
    rig = Rig()
    await rig.standard(annotations={DEAD_GRANT_ANNOTATION: dead_mark("refresh-0")})
    await rig.reconcile()
    assert ([], []) == (rig.provider.exchanged, rig.kube.writes)
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")
    assert rig.kube.links[LINK]["status"].get("deadGrantDigest")


@run
async def test_a_claim_for_a_refresh_token_marked_dead_is_not_taken() -> None:
    """The writer's own check: the Secret says its refresh token is dead (another replica
    was refused it after our decision), so nothing is claimed or written; a mark for a
    token the Secret no longer holds (a new sign-in since) stops nothing."""
    rig = Rig()
    await rig.standard(annotations={DEAD_GRANT_ANNOTATION: dead_mark("refresh-0")})
    refused = await rig.engine.writer.claim(SECRET, SecretStr("refresh-0"))
    assert (ClaimState.CHANGED, []) == (refused.state, rig.kube.writes)
    rig.kube.edit_secret(SECRET, {"data": {"refresh_token": b64("refresh-new")}})
    rig.engine.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    taken = await rig.engine.writer.claim(SECRET, SecretStr("refresh-new"))
    assert (ClaimState.CLAIMED, ["claim"]) == (taken.state, [w.kind for w in rig.kube.writes])


async def refused_while_edited(edit: Mapping[str, Any]) -> Rig:
    """The provider refuses refresh-0; another writer applies ``edit`` to the Secret just
    before our release reaches the API server (which answers 409)."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    edited = False

    def edit_once(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal edited
        if DEAD_GRANT_ANNOTATION in (patch.get("metadata") or {}).get("annotations", {}) and not edited:
            edited = True
            rig.kube.edit_secret(key, edit)

    rig.kube.before_secret_patch = edit_once
    await rig.reconcile()
    assert ["refresh-0"] == rig.provider.exchanged
    return rig


@run
async def test_a_dead_grant_mark_lost_to_an_unrelated_edit_is_written_again() -> None:
    """The release that marks the dead grant is a compare-and-swap: after a 409 from an
    unrelated edit, the Secret is read and the mark and the claim's removal written again."""
    rig = await refused_while_edited({"data": {"note": b64("x")}})
    annotations = rig.kube.secrets[SECRET]["metadata"]["annotations"]
    assert ["release ns/tok 409", "release ns/tok"] == rig.steps("release", full=True)
    assert (dead_mark("refresh-0"), None) == (annotations.get(DEAD_GRANT_ANNOTATION), annotations.get(CLAIM_ANNOTATION))


@run
async def test_a_new_sign_in_during_the_refused_refresh_is_not_marked_dead() -> None:
    """After a 409 because the user signed in again meanwhile, only our claim goes: the
    new refresh token is alive."""
    rig = await refused_while_edited({"data": {"refresh_token": b64("refresh-new")}})
    annotations = rig.kube.secrets[SECRET]["metadata"]["annotations"]
    assert ["release ns/tok 409", "release ns/tok"] == rig.steps("release", full=True)
    assert (None, None) == (annotations.get(DEAD_GRANT_ANNOTATION), annotations.get(CLAIM_ANNOTATION))


# --- persists first: the kill window ---------------------------------------------------
@run
async def test_persists_and_their_re_reads_ask_to_go_ahead_of_other_api_calls() -> None:
    """The persist of new tokens (and the re-read after its 409) are marked urgent, so the
    real port runs them in a pool of their own; claims, releases and status writes are not."""
    rig = Rig()
    await rig.standard()
    edited = False

    def user_edits_once(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal edited
        if "access_token" in (patch.get("data") or {}) and not edited:
            edited = True
            rig.kube.edit_secret(key, {"data": {"note": b64("x")}})

    rig.kube.before_secret_patch = user_edits_once
    await rig.reconcile()
    assert [("claim", False), ("persist", True), ("persist", True)] == [(w.kind, w.urgent) for w in rig.kube.writes]
    assert 1 == rig.kube.urgent_reads
