"""SecretWriter (engine/writing.py) on its own, against the fake API server: what each
claim answer comes to, releases, re-reads, and the persist's retries. Sentences, one
behaviour each; the engine-level paths are in test_refreshing.py and test_exactly_once.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from externalauth.engine.writing import ClaimState, PersistOutcome, SecretWriter
from externalauth.errors import ConflictError, NotFoundError, TransientError
from externalauth.model import claims
from externalauth.model.names import CLAIM_ANNOTATION, DEAD_GRANT_ANNOTATION
from externalauth.model.secure import SecretStr
from externalauth.model.tokens import b64
from tests.unit.engine.rig import SECRET, Rig, run, until

RT = SecretStr("refresh-0")


async def _rig() -> Rig:
    rig = Rig()
    await rig.standard()
    return rig


@run
async def test_a_claim_taken_says_whose_and_until_when() -> None:
    rig = await _rig()
    result = await rig.engine.writer.claim(SECRET, RT)
    until = rig.clock.now().timestamp() + rig.engine.settings.claim_lease
    assert (ClaimState.CLAIMED, "me", until) == (result.state, result.claim and result.claim.holder,
                                                 result.claim and result.claim.until)
    assert result.body is not None and result.body["metadata"]["annotations"][CLAIM_ANNOTATION] == f"me;{until:.0f}"


@run
async def test_a_claim_on_a_deleted_secret_is_a_race_and_the_cache_forgets_it() -> None:
    rig = await _rig()
    del rig.kube.secrets[SECRET]
    result = await rig.engine.writer.claim(SECRET, RT)
    assert (ClaimState.RACED, None) == (result.state, rig.engine.caches.secrets.get(SECRET))


@run
async def test_a_claim_that_conflicts_is_a_race_and_re_reads() -> None:
    rig = await _rig()
    rig.kube.edit_secret(SECRET, {"data": {"note": b64("x")}})
    result = await rig.engine.writer.claim(SECRET, RT)
    cached = rig.engine.caches.secrets.get(SECRET)
    assert (ClaimState.RACED, rig.kube.secrets[SECRET]["metadata"]["resourceVersion"]) == (
        result.state, cached and cached["metadata"]["resourceVersion"])


@run
async def test_a_claim_the_api_server_refuses_fails_with_why() -> None:
    rig = await _rig()

    def unreachable(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        raise TransientError("API server unreachable")

    rig.kube.before_secret_patch = unreachable
    result = await rig.engine.writer.claim(SECRET, RT)
    assert (ClaimState.FAILED, "cannot claim the Secret for refresh: API server unreachable") == (
        result.state, result.message)


@run
async def test_nothing_is_released_without_a_claim_of_ours() -> None:
    rig = await _rig()
    await rig.engine.writer.release(SECRET)
    assert [] == rig.kube.writes


@run
async def test_a_failed_re_read_keeps_the_cached_copy_and_a_missing_secret_is_forgotten() -> None:
    rig = await _rig()
    cached = rig.engine.caches.secrets.get(SECRET)
    rig.kube.fail_reads = 1
    assert cached is not None and cached == await rig.engine.writer.reread(SECRET)
    del rig.kube.secrets[SECRET]
    assert (None, None) == (await rig.engine.writer.reread(SECRET), rig.engine.caches.secrets.get(SECRET))


@run
async def test_a_persist_whose_conflict_re_read_fails_waits_and_tries_again() -> None:
    """409, then the re-read fails: wait a little (a growing delay) and write again (409
    again), read, and write on the new version."""
    rig = await _rig()
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None
    rig.kube.edit_secret(SECRET, {"data": {"note": b64("x")}})
    rig.kube.fail_reads = 1
    start = rig.clock.monotonic()
    outcome = await rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                              data={"access_token": b64("access-1")})
    assert (PersistOutcome.PERSISTED, "access-1") == (outcome, rig.kube.stored(SECRET, "access_token"))
    assert 0 < rig.clock.monotonic() - start <= 1
    assert ["persist ns/tok 409", "get ns/tok", "persist ns/tok 409", "get ns/tok", "persist ns/tok"] == rig.steps(
        "persist", "get", full=True)


@run
async def test_a_persist_told_not_found_by_a_server_that_cannot_say_keeps_trying() -> None:
    """404, and the read that would confirm it fails too: not believed, tried again."""
    rig = await _rig()
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None
    rig.kube.fail_writes = [NotFoundError("not found")]
    rig.kube.fail_reads = 1
    outcome = await rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                              data={"access_token": b64("access-1")})
    assert (PersistOutcome.PERSISTED, "access-1") == (outcome, rig.kube.stored(SECRET, "access_token"))


@run
async def test_a_persist_of_a_deleted_secret_is_lost_and_forgotten() -> None:
    rig = await _rig()
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None
    rig.kube.edit_secret(SECRET, {"data": {"note": b64("x")}})

    def deleted(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        del rig.kube.secrets[key]
        raise ConflictError("conflict")

    rig.kube.before_secret_patch = deleted
    outcome = await rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                              data={"access_token": b64("access-1")})
    assert (PersistOutcome.LOST_GONE, None) == (outcome, rig.engine.caches.secrets.get(SECRET))


@run
async def test_format_keys_are_not_written_for_a_token_the_secret_no_longer_holds() -> None:
    rig = await _rig()
    await rig.engine.writer.write_formats(SECRET, access_token=SecretStr("older"), data={"netrc": b64("x")})
    assert [] == rig.kube.writes


@run
async def test_a_persist_whose_secret_a_read_confirms_deleted_is_lost_and_forgotten() -> None:
    """404, and an urgent read agrees: the Secret is gone; the cache forgets it."""
    rig = await _rig()
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None
    del rig.kube.secrets[SECRET]
    outcome = await rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                              data={"access_token": b64("access-1")})
    assert (PersistOutcome.LOST_GONE, None, 1) == (outcome, rig.engine.caches.secrets.get(SECRET),
                                                   rig.kube.urgent_reads)


@run
async def test_a_persist_that_fails_retries_after_growing_delays() -> None:
    """Two failed writes (API server unreachable): retried after 0.4 s, then 0.8 s."""
    rig = await _rig()
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None
    rig.kube.fail_writes = [TransientError("503"), TransientError("503")]
    start = rig.clock.monotonic()
    outcome = await rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                              data={"access_token": b64("access-1")})
    assert (PersistOutcome.PERSISTED, 1.2) == (outcome, round(rig.clock.monotonic() - start, 6))


# --- our own claim, kept while its lease lasts (engine/refreshing.py renews it when low) ---

async def _claimed(rig: Rig) -> Any:
    claimed = await rig.engine.writer.claim(SECRET, RT)
    assert claimed.body is not None and claimed.claim is not None
    return claimed


@run
async def test_our_own_claim_with_lease_left_is_kept_as_it_is() -> None:
    """Half a second left and no minimum asked: the same claim, nothing written."""
    rig = await _rig()
    claimed = await _claimed(rig)
    rig.clock.advance(rig.engine.settings.claim_lease - 0.5)
    writes = len(rig.kube.writes)
    kept = await rig.engine.writer.claim(SECRET, RT, keep=claimed.body)
    assert (ClaimState.CLAIMED, claimed.body, claimed.claim, writes) == (
        kept.state, kept.body, kept.claim, len(rig.kube.writes))


@run
async def test_our_own_claim_is_renewed_when_no_more_than_the_minimum_is_left() -> None:
    """Exactly 35 s left when more than 35 s are asked: a new claim, a full lease from now."""
    rig = await _rig()
    claimed = await _claimed(rig)
    rig.clock.advance(rig.engine.settings.claim_lease - 35)
    renewed = await rig.engine.writer.claim(SECRET, RT, keep=claimed.body, keep_above=35)
    until = rig.clock.now().timestamp() + rig.engine.settings.claim_lease
    assert (ClaimState.CLAIMED, until, "claim") == (
        renewed.state, renewed.claim and renewed.claim.until, rig.kube.writes[-1].kind)


@run
async def test_our_own_claim_whose_lease_ran_out_is_never_kept() -> None:
    """Bug fix: with no minimum asked, a claim with 0 s left (run out) counted as kept, so a
    token call could go out with no live claim; now a new claim is written."""
    rig = await _rig()
    claimed = await _claimed(rig)
    rig.clock.advance(rig.engine.settings.claim_lease + 1)
    renewed = await rig.engine.writer.claim(SECRET, RT, keep=claimed.body)
    until = rig.clock.now().timestamp() + rig.engine.settings.claim_lease
    assert (ClaimState.CLAIMED, until) == (renewed.state, renewed.claim and renewed.claim.until)


@run
async def test_a_format_write_waits_for_a_refresh_of_the_same_secret() -> None:
    """The Secret's lock: format keys are never written in the middle of its refresh."""
    rig = await _rig()
    writer = rig.engine.writer
    async with writer.lock(SECRET):
        task = asyncio.ensure_future(writer.write_formats(SECRET, access_token=SecretStr("access-0"),
                                                          data={"netrc": b64("x")}))
        await until(lambda: writer.waiting(SECRET) == 2, tasks=[task])
        assert [] == rig.kube.writes_of("formats")
    await task
    assert ["ok"] == [w.result for w in rig.kube.writes_of("formats")]


@run
async def test_shut_down_waits_for_a_token_write_no_longer_than_its_grace() -> None:
    """A persist that does not end (an API server that does not answer) does not hold the
    shut-down past its grace; it is still running, and lands when the server answers."""
    rig = await _rig()
    claimed = await _claimed(rig)
    rig.kube.persist_gate = asyncio.Event()
    persist = asyncio.ensure_future(rig.engine.writer.persist(SECRET, base=claimed.body, consumed=RT,
                                                              data={"access_token": b64("access-1")}))
    await until(lambda: rig.kube.persists_waiting == 1, tasks=[persist])
    await asyncio.wait_for(rig.engine.writer.drain(grace=0.01), timeout=10)
    assert not persist.done()
    rig.kube.persist_gate.set()
    assert PersistOutcome.PERSISTED == await persist


# --- the dead-grant mark: salted with the Secret's uid -------------------------------------

async def _with_uid(rig: Rig, uid: str) -> None:
    """The fake's Secrets have no uid; the API server gives every Secret one."""
    rig.kube.edit_secret(SECRET, {"metadata": {"uid": uid}})
    await rig.engine.writer.reread(SECRET)


@run
async def test_a_refused_refresh_token_is_marked_dead_salted_with_the_secrets_uid() -> None:
    """The mark names the token without revealing it, and only for this very Secret."""
    rig = await _rig()
    await _with_uid(rig, "uid-of-tok")
    await _claimed(rig)
    await rig.engine.writer.release(SECRET, dead=RT)
    annotations = rig.kube.secrets[SECRET]["metadata"]["annotations"]
    assert (None, claims.dead_grant_digest(RT, secret_uid="uid-of-tok")) == (
        annotations.get(CLAIM_ANNOTATION), annotations.get(DEAD_GRANT_ANNOTATION))


@pytest.mark.parametrize(("salt", "believed"), [
    pytest.param("uid-of-tok", True, id="a mark salted with the Secret's uid is believed"),
    pytest.param("uid-of-another-secret", False, id="a mark copied from another Secret is not"),
])
def test_a_dead_grant_mark_is_believed_only_for_the_secret_it_was_made_for(salt: str, believed: bool) -> None:
    secret: Any = {"metadata": {"uid": "uid-of-tok", "annotations": {
        DEAD_GRANT_ANNOTATION: claims.dead_grant_digest(RT, secret_uid=salt)}}}
    assert believed == SecretWriter.marked_dead(secret, RT)
