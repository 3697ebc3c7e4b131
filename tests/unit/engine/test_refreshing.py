"""The engine's refresh path against fakes of its ports and a fake clock: claim →
exchange → persist → validate, compare-and-swap, claims and leases, dead grants."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from externalauth.engine.reconciler import Engine
from externalauth.engine.settings import Settings
from externalauth.errors import ForbiddenError, NotFoundError, TransientError
from externalauth.model.durations import format_time
from externalauth.model.names import CLAIM_ANNOTATION
from externalauth.policy.classifying import ValidationOutcome, ValidationVerdict
from tests.unit.engine.fakes import NO_ANSWER, answer, b64, error, factory, success
from tests.unit.engine.rig import LINK, SECRET, Rig, run, until


@run
async def test_a_due_token_is_claimed_exchanged_and_persisted_before_it_is_validated() -> None:
    """The order every refresh keeps: claim, exchange, persist, then validation."""
    rig = Rig(validate=True)
    await rig.standard()
    await rig.reconcile()
    assert ["claim", "exchange", "persist", "validate", "status"] == rig.steps(
        "claim", "exchange", "persist", "validate", "status")
    assert ("access-1", "refresh-1", None) == (
        rig.kube.stored(SECRET, "access_token"), rig.kube.stored(SECRET, "refresh_token"), rig.kube.claim(SECRET))
    assert ("True", "Refreshed") == rig.condition("Refreshable")


@run
async def test_a_rate_limited_validation_after_a_refresh_keeps_the_new_token() -> None:
    """Persist first: a validation without a verdict never touches what was stored."""
    rig = Rig(validate=True)
    rig.provider.verdict = ValidationOutcome(ValidationVerdict.RATE_LIMITED, "rate limited", retry_after=120)
    await rig.standard()
    await rig.reconcile()
    stored = (rig.kube.stored(SECRET, "access_token"), rig.kube.stored(SECRET, "refresh_token"))
    assert ("access-1", "refresh-1") == stored
    assert ("Unknown", "RateLimited") == rig.condition("Validated")


@run
async def test_a_conflict_from_an_unrelated_edit_is_re_applied_on_the_new_version() -> None:
    """409 because someone added a key: re-read, same refresh token stored → write again;
    the unrelated edit survives."""
    rig = Rig()
    await rig.standard()
    edited = False

    def user_edits(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal edited
        if "access_token" in (patch.get("data") or {}) and not edited:
            edited = True
            rig.kube.edit_secret(key, {"data": {"note": b64("keep me")}})

    rig.kube.before_secret_patch = user_edits
    await rig.reconcile()
    assert ["persist ns/tok 409", "get ns/tok", "persist ns/tok"] == rig.steps("persist", "get", full=True)
    assert ("access-1", "keep me") == (rig.kube.stored(SECRET, "access_token"), rig.kube.stored(SECRET, "note"))


@run
async def test_a_conflict_from_another_refresh_keeps_the_stored_token() -> None:
    """409 because another writer stored a newer refresh token: theirs wins."""
    rig = Rig()
    await rig.standard()

    def other_refreshes(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        if "access_token" in (patch.get("data") or {}) and rig.kube.stored(key, "refresh_token") == "refresh-0":
            rig.kube.edit_secret(key, {"data": {"access_token": b64("theirs"), "refresh_token": b64("their-rt")}})

    rig.kube.before_secret_patch = other_refreshes
    await rig.reconcile()
    await rig.settle()
    assert ("theirs", "their-rt") == (rig.kube.stored(SECRET, "access_token"), rig.kube.stored(SECRET, "refresh_token"))
    assert ["exchange"] == rig.steps("exchange")
    assert "RefreshSuperseded" in rig.event_reasons()


@run
async def test_a_dead_grant_is_rechecked_and_is_success_when_another_writer_changed_the_token() -> None:
    """invalid_grant, but a fresh read shows a new refresh token: someone else refreshed."""
    rig = Rig()
    await rig.standard()

    def other_won(rt: str, n: int) -> Any:
        rig.kube.edit_secret(SECRET, {"data": {"access_token": b64("theirs"), "refresh_token": b64("their-rt")}})
        return error(400, "invalid_grant")

    rig.provider.answer = other_won
    await rig.reconcile()
    await rig.settle()
    assert "get ns/tok" in rig.journal  # re-read before concluding anything
    assert ("True", "TokenCurrent") == rig.condition("Ready")
    assert "RefreshSuperseded" in rig.event_reasons()
    assert "ReauthRequired" not in rig.event_reasons()


@run
async def test_a_dead_grant_with_the_token_unchanged_waits_for_a_new_sign_in() -> None:
    """invalid_grant and the Secret still holds the refresh token: ReauthRequired, the
    token keys untouched, and no second exchange of the dead token."""
    rig = Rig()
    await rig.standard()
    before = dict(rig.kube.secrets[SECRET]["data"])
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    await rig.reconcile()
    await rig.reconcile()
    await rig.settle()
    assert before == rig.kube.secrets[SECRET]["data"]
    assert ["exchange"] == rig.steps("exchange")
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")
    assert "ReauthRequired" in rig.event_reasons()
    assert rig.kube.claim(SECRET) is None  # released


@run
async def test_a_live_claim_of_another_replica_defers_the_refresh_until_it_ends() -> None:
    """No exchange while another replica's claim is live; look again when it ends."""
    rig = Rig()
    until = rig.clock.now().timestamp() + 40
    await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{until:.0f}"})
    await rig.reconcile()
    assert [] == rig.steps("exchange", "claim")
    wake = rig.engine.scheduler.when(LINK)
    assert wake is not None and until <= wake.timestamp() <= until + 2


@run
async def test_a_claim_whose_lease_ran_out_is_taken_over() -> None:
    """A crashed replica's claim holds only until its lease ends."""
    rig = Rig()
    await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{rig.clock.now().timestamp() - 1:.0f}"})
    await rig.reconcile()
    assert ["claim", "exchange", "persist"] == rig.steps("claim", "exchange", "persist")


@run
async def test_forged_claims_are_replaced_not_obeyed() -> None:
    """A claim no operator could have written (endless, or beyond the longest lease)."""
    for forged in ("someone;inf", "someone;99999999999", "someone;nan", "garbage"):
        rig = Rig()
        await rig.standard(annotations={CLAIM_ANNOTATION: forged})
        await rig.reconcile()
        assert ["claim", "exchange", "persist"] == rig.steps("claim", "exchange", "persist"), forged


@run
async def test_a_lease_that_ran_low_in_the_queue_is_renewed_before_the_token_is_sent() -> None:
    """With one exchange slot, the second Secret's claim waits behind the first exchange;
    when less lease is left than a provider call may take, it is renewed first."""
    rig = Rig(max_concurrent=1, settings=Settings(claim_lease=60))
    await rig.add_provider()
    rig.add_secret("tok")
    rig.add_secret("tok2", access="a2", refresh="r2")
    rig.add_link("l")
    rig.add_link("l2", secret="tok2")
    rig.provider.gate = gate = asyncio.Event()
    first = asyncio.create_task(rig.reconcile(("ns", "l")))
    second = asyncio.create_task(rig.reconcile(("ns", "l2")))
    await until(lambda: rig.steps("claim").count("claim") == 2 and rig.provider.exchanged)
    rig.clock.advance(45)  # the first exchange is slow: 15 s of the second lease are left
    gate.set()
    await asyncio.gather(first, second)
    second_secret = [e for e in rig.steps("claim", "exchange", "persist", full=True) if e.endswith(("tok2", " r2"))]
    assert ["claim ns/tok2", "claim ns/tok2", "exchange r2", "persist ns/tok2"] == second_secret


@run
async def test_a_token_call_that_waited_past_its_lease_is_not_sent_and_is_retried_under_a_fresh_claim() -> None:
    """§9.15: the call waited 70 s for its turn (a slow provider's threads, say): when it is
    about to be sent its claim has run out, so nothing is sent, the claim is released and the
    link retries as transient; the retry claims again and exchanges the same, unspent token."""
    rig = Rig(settings=Settings(claim_lease=60))
    await rig.standard()
    rig.provider.queued = 70
    await rig.reconcile()
    assert (["claim", "unsent", "release"], None, ("False", "RetryingTransientError")) == (
        rig.steps("claim", "unsent", "exchange", "release"), rig.kube.claim(SECRET), rig.condition("Refreshable"))
    rig.provider.queued = 0
    wake = rig.engine.scheduler.when(LINK)
    assert wake is not None
    rig.clock.advance((wake - rig.clock.now()).total_seconds())
    await rig.reconcile()
    assert (["claim", "unsent", "release", "claim", "exchange", "persist"], "refresh-1") == (
        rig.steps("claim", "unsent", "exchange", "release", "persist"), rig.kube.stored(SECRET, "refresh_token"))


@run
async def test_a_token_calls_deadline_ends_before_its_claims_lease_does() -> None:
    """A call sent 40 s into a 60 s lease may take 15 s (the lease left minus 5 s to persist),
    not the provider deadline's 30 s; one sent at once gets the whole 30 s."""
    budgets = []
    for queued in (40.0, 0.0):
        rig = Rig(settings=Settings(claim_lease=60))
        await rig.standard()
        rig.provider.queued = queued
        await rig.reconcile()
        budgets += rig.provider.budgets
    assert [15.0, 30.0] == budgets


@run
async def test_a_secret_deleted_during_the_exchange_loses_the_token_and_stops() -> None:
    """The provider answered, but the Secret is gone: no endless retry of the write."""
    rig = Rig()
    await rig.standard()

    def delete_then_answer(rt: str, n: int) -> Any:
        del rig.kube.secrets[SECRET]
        return success("access-1", "refresh-1")

    rig.provider.answer = delete_then_answer
    await asyncio.wait_for(rig.reconcile(), timeout=5)
    assert ["persist ns/tok 404"] == rig.steps("persist", full=True)


@run
async def test_a_transient_failure_backs_off_and_is_retried_on_the_current_secret() -> None:
    """A 5xx is retried after backoff, never before; the retry decides again."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: answer(503, headers={"Retry-After": "30"})
    await rig.reconcile()
    assert ("False", "RetryingTransientError") == rig.condition("Refreshable")
    wake = rig.engine.scheduler.when(LINK)
    assert wake is not None and (wake - rig.clock.now()).total_seconds() >= 30
    await rig.reconcile()  # woken early (an unrelated event): still backing off
    assert ["exchange"] == rig.steps("exchange")


@run
async def test_a_rejected_client_backs_off_the_provider_not_the_link_tokens() -> None:
    """invalid_client: the provider is CredentialsRejected, the Secret untouched."""
    rig = Rig()
    await rig.standard()
    before = dict(rig.kube.secrets[SECRET]["data"])
    rig.provider.answer = lambda rt, n: error(401, "invalid_client")
    await rig.reconcile()
    assert before == rig.kube.secrets[SECRET]["data"]
    assert ("False", "ProviderCredentialsRejected") == rig.condition("Refreshable")
    conditions = rig.kube.providers["gh"]["status"]["conditions"]
    assert [("False", "CredentialsRejected")] == [(c["status"], c["reason"]) for c in conditions]


@run
async def test_an_unusable_answer_is_not_retried_with_the_possibly_spent_token() -> None:
    """200 that is not a token: the refresh token may be spent; no blind retry."""
    rig = Rig()
    await rig.standard()
    before = dict(rig.kube.secrets[SECRET]["data"])
    rig.provider.answer = lambda rt, n: answer(200, raw=b"<html>not a token</html>")
    await rig.reconcile()
    rig.clock.advance(600)
    await rig.reconcile()
    assert ["exchange"] == rig.steps("exchange")
    assert before == rig.kube.secrets[SECRET]["data"]
    assert ("False", "ReauthRequired") == rig.condition("Refreshable")


@run
async def test_an_unusable_answer_that_carries_a_new_refresh_token_keeps_it() -> None:
    """Never drop what was obtained: the salvaged refresh token is stored and used next."""
    rig = Rig()
    await rig.standard()
    answers = iter([answer(200, {"refresh_token": "salvaged", "token_type": "bearer"})])  # no access token
    rig.provider.answer = lambda rt, n: next(answers, None) or success("access-2", "refresh-2")
    await rig.reconcile()
    assert "salvaged" == rig.kube.stored(SECRET, "refresh_token")
    assert ("False", "RetryingTransientError") == rig.condition("Refreshable")
    rig.clock.advance(600)
    await rig.reconcile()
    assert ["refresh-0", "salvaged"] == rig.provider.exchanged
    assert "access-2" == rig.kube.stored(SECRET, "access_token")


@run
async def test_a_token_unsafe_for_files_is_stored_and_its_format_keys_removed() -> None:
    """A token that is not visible ASCII cannot go into netrc or git-credentials: the
    tokens are persisted anyway, stale format keys are removed, and Ready says why."""
    rig = Rig()
    await rig.add_provider()
    rig.add_secret()
    rig.add_link(outputFormats=["netrc"])
    await rig.reconcile()
    assert rig.kube.stored(SECRET, "netrc") is not None
    rig.provider.answer = lambda rt, n: success("t\u00f6k\u00e9n", "refresh-1")
    rig.request_refresh("now")
    await rig.reconcile()
    assert ("refresh-1", None) == (rig.kube.stored(SECRET, "refresh_token"), rig.kube.stored(SECRET, "netrc"))
    message = next(c["message"] for c in rig.kube.links[LINK]["status"]["conditions"] if c["type"] == "Ready")
    assert "no output format keys" in message


@run
async def test_a_retry_decides_again_on_the_current_secret() -> None:
    """Issue #11.5: a refresh failed transiently; meanwhile another replica refreshed the
    Secret (not due any more). The retry must not exchange the fresh token again."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: NO_ANSWER
    await rig.reconcile()
    assert ("False", "RetryingTransientError") == rig.condition("Refreshable")
    later = format_time(rig.clock.now() + dt.timedelta(hours=8))
    rig.kube.edit_secret(SECRET, {"data": {"access_token": b64("theirs"), "refresh_token": b64("their-rt"),
                                           "expiry": b64(later)}})
    rig.engine.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    rig.clock.advance(600)  # past any backoff
    await rig.reconcile()
    assert ["refresh-0"] == rig.provider.exchanged
    assert "True" == rig.condition("Refreshable")[0]


@run
async def test_an_answer_lost_in_flight_then_a_dead_grant_is_a_token_lost() -> None:
    """Issue #11.4: the exchange got no answer (the provider rotated the token anyway);
    the retry with the old token is refused: that is surfaced as TokenLost, not hidden."""
    rig = Rig()
    await rig.standard()
    answers = iter([NO_ANSWER, error(400, "invalid_grant")])
    rig.provider.answer = lambda rt, n: next(answers)
    await rig.reconcile()
    rig.clock.advance(600)
    await rig.reconcile()
    await rig.settle()
    assert ["refresh-0", "refresh-0"] == rig.provider.exchanged
    assert ["TokenLost", "ReauthRequired"] == [r for r in rig.event_reasons() if r in ("TokenLost", "ReauthRequired")]


@run
async def test_a_token_refreshed_by_one_replica_is_validated_once_not_by_every_replica() -> None:
    """Contract §10 (at most 1 validation call per refresh): replica B knows the old token
    (it validated it); replica A refreshes and validates the new one; B sees the new token
    and A's status naming it as validated, and does not call the provider again."""
    rig = Rig(validate=True)
    await rig.standard(expires_in=8 * 3600)
    b = Engine(rig.kube, make_client=factory(lambda spec, secret: rig.provider), clock=rig.clock, holder="b")

    async def b_sees_everything() -> None:
        await b.on_provider("ADDED", copy.deepcopy(rig.kube.providers["gh"]))  # type: ignore[arg-type]
        b.on_secret("ADDED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
        b.on_link("ADDED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
        b.scheduler.forget(LINK)
        await b.reconcile_link(LINK)

    await b_sees_everything()  # B validates the token it finds
    rig.request_refresh("now")
    await rig.reconcile()  # A refreshes and validates the new token
    for _ in range(3):
        await b_sees_everything()
        rig.clock.advance(60)
    assert ["access-0", "access-1"] == rig.provider.validated
    assert ["refresh-0"] == rig.provider.exchanged


@run
async def test_a_token_nobody_vouched_for_is_validated_after_the_grace() -> None:
    """A token another writer stored, with no verdict recorded: validated once the grace
    period has passed (not never)."""
    rig = Rig(validate=True)
    await rig.standard(expires_in=8 * 3600)
    await rig.reconcile()
    assert ["access-0"] == rig.provider.validated
    rig.kube.edit_secret(SECRET, {"data": {"access_token": b64("from-the-user")}})
    rig.engine.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    await rig.reconcile()
    assert ["access-0"] == rig.provider.validated  # within the grace
    rig.clock.advance(31)
    await rig.reconcile()
    assert ["access-0", "from-the-user"] == rig.provider.validated


@run
async def test_a_restarting_api_server_does_not_make_the_operator_drop_a_token() -> None:
    """403 (RBAC not synced yet), 404 from a half-started server, 503: the persist keeps
    trying until the Secret takes the token; only a refusal of the object itself loses it."""
    rig = Rig()
    await rig.standard()
    rig.kube.fail_writes = [ForbiddenError("forbidden"), NotFoundError("not found"), TransientError("503")]
    await rig.reconcile()
    assert ["persist ns/tok ForbiddenError", "persist ns/tok NotFoundError", "persist ns/tok TransientError",
            "persist ns/tok"] == rig.steps("persist", full=True)
    assert "access-1" == rig.kube.stored(SECRET, "access_token")


@run
async def test_the_time_a_new_token_lives_only_in_memory_is_measured() -> None:
    """The kill window's own part (issue #11.2): from the provider's answer to the Secret
    write landing, as ``externalauth_refresh_unsaved_seconds``."""
    from externalauth import metrics

    def observed() -> tuple[float, float]:
        count = metrics.REGISTRY.get_sample_value("externalauth_refresh_unsaved_seconds_count", {"provider": "gh"})
        total = metrics.REGISTRY.get_sample_value("externalauth_refresh_unsaved_seconds_sum", {"provider": "gh"})
        return count or 0.0, total or 0.0

    rig = Rig()
    before = observed()

    def slow_persist(key: object, patch: Mapping[str, Any]) -> None:
        if "access_token" in (patch.get("data") or {}):
            rig.clock.advance(0.25)  # the write takes 250 ms

    rig.kube.before_secret_patch = slow_persist
    await rig.standard()
    await rig.reconcile()
    count, total = observed()
    assert ("access-1", 1.0) == (rig.kube.stored(SECRET, "access_token"), count - before[0])
    assert abs(total - before[1] - 0.25) < 1e-6


@run
async def test_validations_in_flight_do_not_hold_back_token_exchanges() -> None:
    """maxConcurrentRefreshes bounds token-endpoint calls (contract §2); validations have a
    bound of their own. When they shared one, a storm with validation on took twice as long
    to persist (each validation held an exchange's slot for a provider round trip)."""
    rig = Rig(validate=True, max_concurrent=1)
    rig.provider.validation_gate = asyncio.Event()
    await rig.standard()
    rig.add_secret("tok2")
    rig.add_link("l2", secret="tok2")
    first = asyncio.create_task(rig.reconcile(LINK))
    await until(lambda: rig.provider.validated)  # the first link's validation is in flight
    second = asyncio.create_task(rig.reconcile(("ns", "l2")))
    await until(lambda: len(rig.provider.exchanged) == 2)  # not held back by that validation
    rig.provider.validation_gate.set()
    await asyncio.gather(first, second)
    assert ["refresh-0", "refresh-0"] == rig.provider.exchanged
