"""policy/effects.py: what each outcome of a refresh or a validation means for its link
(memory, metrics, events), one row per sentence. The engine only executes these."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from externalauth.model.reasons import EventReason, RefreshableReason, RefreshResult, ValidatedReason
from externalauth.model.secure import SecretStr
from externalauth.model.tokens import TokenSet
from externalauth.policy import effects
from externalauth.policy.classifying import ValidationOutcome, ValidationVerdict
from externalauth.policy.deciding import Failure, LinkMemory, Validation
from externalauth.policy.effects import ClientNews, Context, Refresh, RefreshOutcome

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
SENT = SecretStr("r1").fingerprint()
NEW = TokenSet(access_token=SecretStr("a2"), refresh_token=SecretStr("r2"), expiry=NOW + 3600 * S)
RT_SOON = dataclasses.replace(NEW, refresh_token_expiry=NOW + dt.timedelta(days=2))
FAILING = Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "the provider answered 503", 1, NOW - S, SENT)


def ctx(**kw: Any) -> Context:
    base: dict[str, Any] = dict(memory=LinkMemory(), now=NOW, acted="req-1", consumed_fp=SENT, seed="ns/l",
                                backoff_base=2.0, backoff_cap=300.0)
    base.update(kw)
    return Context(**base)


def summary(e: effects.Effects) -> tuple[Any, ...]:
    """The whole effect, with the memory told by the fields an outcome changes."""
    m = e.memory
    failure = None if m.failure is None else (m.failure.reason, m.failure.failures, m.failure.retry_at is not None)
    return (e.count, e.lost, [ev.reason for ev in e.events], e.rt_warned,
            m.last_refresh, m.acted_request, m.dead_grant_fingerprint == SENT, m.lost, failure, m.unanswered,
            len(m.asked))


Row = tuple[str, Refresh, Context, tuple[Any, ...]]
ROWS: list[Row] = [
    ("persisted: remember the refresh, count a success, say Refreshed",
     Refresh(RefreshOutcome.PERSISTED, tokens=NEW, stored=True), ctx(),
     (RefreshResult.SUCCESS, None, [EventReason.REFRESHED], None, NOW, "req-1", False, None, None, None, 0)),
    ("persisted with a refresh token that expires within a week: warn once",
     Refresh(RefreshOutcome.PERSISTED, tokens=RT_SOON, stored=True), ctx(),
     (RefreshResult.SUCCESS, None, [EventReason.REFRESHED, EventReason.REFRESH_TOKEN_EXPIRING_SOON],
      "2026-11-29T12:00:00Z", NOW, "req-1", False, None, None, None, 0)),
    ("persisted with a refresh-token expiry already warned about: no second warning",
     Refresh(RefreshOutcome.PERSISTED, tokens=RT_SOON, stored=True), ctx(rt_warned="2026-11-29T12:00:00Z"),
     (RefreshResult.SUCCESS, None, [EventReason.REFRESHED], None, NOW, "req-1", False, None, None, None, 0)),
    ("persisted after a request: the request counts against the link's rate",
     Refresh(RefreshOutcome.PERSISTED, tokens=NEW, stored=True), ctx(asked_at=NOW),
     (RefreshResult.SUCCESS, None, [EventReason.REFRESHED], None, NOW, "req-1", False, None, None, None, 1)),
    ("superseded: another writer's token kept, the failure forgotten",
     Refresh(RefreshOutcome.SUPERSEDED, stored=True), ctx(memory=LinkMemory(failure=FAILING)),
     (RefreshResult.SUPERSEDED, None, [EventReason.REFRESH_SUPERSEDED], None, None, "req-1", False, None, None,
      None, 0)),
    ("changed before the claim: nothing sent, nothing counted, the failure forgotten",
     Refresh(RefreshOutcome.CHANGED), ctx(memory=LinkMemory(failure=FAILING), asked_at=NOW),
     (None, None, [], None, None, "req-1", False, None, None, None, 0)),
    ("raced: nothing to remember, decide again",
     Refresh(RefreshOutcome.RACED), ctx(memory=LinkMemory(failure=FAILING)),
     (None, None, [], None, None, None, False, None, (RefreshableReason.RETRYING_TRANSIENT_ERROR, 1, True), None,
      0)),
    ("dead grant: never sent again, ReauthRequired",
     Refresh(RefreshOutcome.DEAD_GRANT, message="invalid_grant"), ctx(),
     (RefreshResult.REAUTH_REQUIRED, None, [EventReason.REAUTH_REQUIRED], None, None, "req-1", True, None, None,
      None, 0)),
    ("dead grant after an exchange that got no answer: the answer was lost in flight",
     Refresh(RefreshOutcome.DEAD_GRANT, message="invalid_grant"), ctx(memory=LinkMemory(unanswered=SENT)),
     (RefreshResult.REAUTH_REQUIRED, "unanswered", [EventReason.TOKEN_LOST, EventReason.REAUTH_REQUIRED], None,
      None, "req-1", True, None, None, SENT, 0)),
    ("permanent: not retried, RefreshFailed",
     Refresh(RefreshOutcome.PERMANENT, message="invalid_scope"), ctx(),
     (RefreshResult.REAUTH_REQUIRED, None, [EventReason.REFRESH_FAILED], None, None, "req-1", True, None, None,
      None, 0)),
    ("transient: back off and say so",
     Refresh(RefreshOutcome.TRANSIENT, message="the provider answered 503"), ctx(),
     (RefreshResult.TRANSIENT_ERROR, None, [EventReason.REFRESH_FAILED], None, None, "req-1", False, None,
      (RefreshableReason.RETRYING_TRANSIENT_ERROR, 1, True), None, 0)),
    ("transient again with the same message: back off longer, said once",
     Refresh(RefreshOutcome.TRANSIENT, message="the provider answered 503"), ctx(memory=LinkMemory(failure=FAILING)),
     (RefreshResult.TRANSIENT_ERROR, None, [], None, None, "req-1", False, None,
      (RefreshableReason.RETRYING_TRANSIENT_ERROR, 2, True), None, 0)),
    ("transient without an answer: the refresh token sent is remembered as unanswered",
     Refresh(RefreshOutcome.TRANSIENT, message="timed out", answered=False), ctx(),
     (RefreshResult.TRANSIENT_ERROR, None, [EventReason.REFRESH_FAILED], None, None, "req-1", False, None,
      (RefreshableReason.RETRYING_TRANSIENT_ERROR, 1, True), SENT, 0)),
    ("claim failed: as transient",
     Refresh(RefreshOutcome.CLAIM_FAILED, message="cannot claim"), ctx(),
     (RefreshResult.TRANSIENT_ERROR, None, [EventReason.REFRESH_FAILED], None, None, "req-1", False, None,
      (RefreshableReason.RETRYING_TRANSIENT_ERROR, 1, True), None, 0)),
    ("client rejected: wait for the provider's backoff",
     Refresh(RefreshOutcome.CLIENT_REJECTED, message="invalid_client"), ctx(rejected_until=NOW + 90 * S),
     (RefreshResult.PROVIDER_REJECTED, None, [EventReason.REFRESH_FAILED], None, None, "req-1", False, None,
      (RefreshableReason.PROVIDER_CREDENTIALS_REJECTED, 1, True), None, 0)),
    ("lost: the spent grant is dead, the loss counted and said",
     Refresh(RefreshOutcome.LOST, message="the Secret was deleted during the refresh", lost_reason="gone",
             stored=True), ctx(),
     (None, "gone", [EventReason.TOKEN_LOST], None, None, "req-1", True,
      "the Secret was deleted during the refresh", None, None, 0)),
]


@pytest.mark.parametrize(("result", "context", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_refresh_effects(result: Refresh, context: Context, expected: tuple[Any, ...]) -> None:
    assert expected == summary(effects.refresh_effects(result, context))


def test_a_rejected_client_retries_when_the_provider_backoff_ends() -> None:
    done = effects.refresh_effects(Refresh(RefreshOutcome.CLIENT_REJECTED, message="invalid_client"),
                                   ctx(rejected_until=NOW + 90 * S))
    assert done.memory.failure is not None and NOW + 90 * S == done.memory.failure.retry_at


def test_a_failure_after_a_new_refresh_token_was_stored_is_not_about_the_one_sent() -> None:
    """An unusable answer that carried a new refresh token: it was stored, the next try uses it."""
    done = effects.refresh_effects(Refresh(RefreshOutcome.TRANSIENT, message="m", stored=True), ctx())
    assert done.memory.failure is not None and None is done.memory.failure.refresh_fingerprint


@pytest.mark.parametrize(("outcome", "news"), [
    pytest.param(RefreshOutcome.PERSISTED, ClientNews.ACCEPTED, id="a persisted refresh: the client is fine"),
    pytest.param(RefreshOutcome.CLIENT_REJECTED, ClientNews.REJECTED, id="a rejected client: back off the provider"),
    pytest.param(RefreshOutcome.TRANSIENT, None, id="a transient error says nothing about the client"),
    pytest.param(RefreshOutcome.DEAD_GRANT, None, id="a dead grant says nothing about the client"),
])
def test_client_news(outcome: RefreshOutcome, news: ClientNews | None) -> None:
    assert news == effects.client_news(outcome)


def _verdict(verdict: ValidationVerdict) -> ValidationOutcome:
    return ValidationOutcome(verdict=verdict, message=f"the provider said {verdict.value}")


FP = SecretStr("a1").fingerprint()


@pytest.mark.parametrize(("previous", "verdict", "expected"), [
    pytest.param(None, ValidationVerdict.VALID, (ValidatedReason.VALID, []), id="valid: nothing to say"),
    pytest.param(None, ValidationVerdict.INVALID, (ValidatedReason.INVALID, [EventReason.VALIDATION_FAILED]),
                 id="invalid: say so"),
    pytest.param(ValidatedReason.INVALID, ValidationVerdict.INVALID, (ValidatedReason.INVALID, []),
                 id="invalid again: said once"),
    pytest.param(ValidatedReason.INVALID, ValidationVerdict.RATE_LIMITED,
                 (ValidatedReason.RATE_LIMITED, [EventReason.VALIDATION_FAILED]), id="another failure: say so"),
])
def test_validation_effects(previous: ValidatedReason | None, verdict: ValidationVerdict,
                            expected: tuple[ValidatedReason, list[EventReason]]) -> None:
    memory = LinkMemory(validation=None if previous is None else Validation(
        reason=previous, message="m", at=NOW - S, token_fingerprint=FP))
    done = effects.validation_effects(_verdict(verdict), memory=memory, access_fp=FP, digest="d", now=NOW,
                                      seed="ns/l/v", cap=300.0, status_account=None)
    assert done.memory.validation is not None
    assert expected == (done.memory.validation.reason, [e.reason for e in done.events])


def test_a_refresh_reports_how_long_it_took_and_how_long_the_token_was_unsaved() -> None:
    done = effects.refresh_effects(Refresh(RefreshOutcome.PERSISTED, tokens=NEW, stored=True, seconds=0.3,
                                           unsaved=0.1), ctx())
    assert (0.3, 0.1, None) == (done.refresh_seconds, done.unsaved_seconds, done.verdict)


def test_a_validation_is_counted_by_its_verdict() -> None:
    done = effects.validation_effects(_verdict(ValidationVerdict.RATE_LIMITED), memory=LinkMemory(), access_fp=FP,
                                      digest=None, now=NOW, seed="s", cap=300.0, status_account=None)
    assert ("rate_limited", None) == (done.verdict, done.count)


def test_a_rejected_client_whose_provider_went_away_backs_off_by_its_own_backoff() -> None:
    """No provider backoff to wait for (the provider is gone): the link's own first backoff
    (2 s, ±20 %), not the Retry-After the answer carried (a rejected client's wait is the
    provider's to decide)."""
    done = effects.refresh_effects(Refresh(RefreshOutcome.CLIENT_REJECTED, message="invalid_client",
                                           retry_after=600.0), ctx(rejected_until=None))
    assert done.memory.failure is not None and done.memory.failure.retry_at is not None
    assert NOW + 1.6 * S <= done.memory.failure.retry_at <= NOW + 2.4 * S


def _validation(seed: str, *, memory: LinkMemory = LinkMemory(), status_account: str | None = None,
                 account: str | None = None, verdict: ValidationVerdict = ValidationVerdict.UNREACHABLE,
                 ) -> effects.Effects:
    outcome = ValidationOutcome(verdict=verdict, message="the validation endpoint answered HTTP 502",
                                account=account)
    return effects.validation_effects(outcome, memory=memory, access_fp=FP, digest="d-1", now=NOW, seed=seed,
                                      cap=3600.0, status_account=status_account)


def test_a_validation_without_a_verdict_is_remembered_with_the_token_digest_and_said() -> None:
    done = _validation("ns/l")
    v = done.memory.validation
    assert v is not None
    assert (ValidatedReason.UNREACHABLE, "d-1", [("Warning", EventReason.VALIDATION_FAILED,
                                                  "the validation endpoint answered HTTP 502")]) == (
        v.reason, v.digest, [(e.type, e.reason, e.message) for e in done.events])


def test_validations_without_a_verdict_are_retried_at_times_spread_by_link() -> None:
    retries = {_validation(f"ns/l-{i}").memory.validation.retry_at for i in range(10)}  # type: ignore[union-attr]
    assert 10 == len(retries)


@pytest.mark.parametrize(("previous", "status_account", "account", "expected"), [
    pytest.param(None, "octo", None, "octo", id="no account in the answer nor in memory: the status' account stays"),
    pytest.param(None, "octo", "hubot", "hubot", id="the answer's account wins"),
    pytest.param("mona", "octo", None, "mona", id="the account in memory before the status'"),
])
def test_the_account_a_validation_remembers(previous: str | None, status_account: str | None, account: str | None,
                                            expected: str) -> None:
    memory = LinkMemory(validation=None if previous is None else Validation(
        reason=ValidatedReason.VALID, message="m", at=NOW - S, token_fingerprint=FP, account=previous))
    done = _validation("ns/l", memory=memory, status_account=status_account, account=account,
                        verdict=ValidationVerdict.VALID)
    assert done.memory.validation is not None and expected == done.memory.validation.account
