"""Pure policy: classification of provider answers, scheduling, backoff, the decision chain."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from externalauth.model.reasons import RefreshableReason, ValidatedReason
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_link, parse_provider
from externalauth.model.tokens import TokenSet
from externalauth.policy import timing
from externalauth.policy.classifying import (
    TokenAnswer,
    TokenVerdict,
    ValidationVerdict,
    classify_token_answer,
    classify_validation,
)
from externalauth.policy.deciding import (
    Action,
    Failure,
    LinkInput,
    LinkMemory,
    ProviderView,
    Validation,
    decide,
    render_status,
)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("answer", "verdict"), [
    pytest.param(TokenAnswer(200, has_access_token=True), TokenVerdict.SUCCESS, id="200 with a token"),
    pytest.param(TokenAnswer(200, error="bad_refresh_token"), TokenVerdict.DEAD_GRANT,
                 id="GitHub's 200 bad_refresh_token is a dead grant"),
    pytest.param(TokenAnswer(400, error="invalid_grant"), TokenVerdict.DEAD_GRANT, id="400 invalid_grant"),
    pytest.param(TokenAnswer(200, error="incorrect_client_credentials"), TokenVerdict.CLIENT_REJECTED,
                 id="GitHub's 200 incorrect_client_credentials"),
    pytest.param(TokenAnswer(401, error="invalid_client"), TokenVerdict.CLIENT_REJECTED, id="401 invalid_client"),
    pytest.param(TokenAnswer(400, error="unauthorized_client"), TokenVerdict.CLIENT_REJECTED,
                 id="unauthorized_client"),
    pytest.param(TokenAnswer(503), TokenVerdict.TRANSIENT, id="5xx"),
    pytest.param(TokenAnswer(429, retry_after=7), TokenVerdict.TRANSIENT, id="429"),
    pytest.param(TokenAnswer(None), TokenVerdict.TRANSIENT, id="no answer"),
    pytest.param(TokenAnswer(200), TokenVerdict.UNUSABLE_ANSWER,
                 id="200 without a token: the refresh token may be spent, never retried blindly"),
    pytest.param(TokenAnswer(400, error="invalid_scope"), TokenVerdict.PERMANENT, id="other OAuth error"),
    pytest.param(TokenAnswer(404), TokenVerdict.PERMANENT, id="404"),
])
def test_token_answers_are_classified(answer: TokenAnswer, verdict: TokenVerdict) -> None:
    assert verdict == classify_token_answer(answer).verdict


def test_retry_after_is_carried() -> None:
    assert 7 == classify_token_answer(TokenAnswer(429, retry_after=7)).retry_after


def test_an_unknown_error_code_does_not_reach_the_message() -> None:
    assert "<script>" not in classify_token_answer(TokenAnswer(400, error="<script>")).message


@pytest.mark.parametrize(("status", "headers", "verdict"), [
    pytest.param(200, {}, ValidationVerdict.VALID, id="200 valid"),
    pytest.param(401, {}, ValidationVerdict.INVALID, id="401 invalid"),
    pytest.param(403, {}, ValidationVerdict.INVALID, id="403 without rate-limit sign is invalid"),
    pytest.param(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"},
                 ValidationVerdict.RATE_LIMITED, id="GitHub primary rate limit"),
    pytest.param(403, {"retry-after": "60"}, ValidationVerdict.RATE_LIMITED, id="GitHub secondary rate limit"),
    pytest.param(403, {"ratelimit-remaining": "0"}, ValidationVerdict.RATE_LIMITED, id="IETF header"),
    pytest.param(429, {}, ValidationVerdict.RATE_LIMITED, id="429"),
    pytest.param(502, {}, ValidationVerdict.UNREACHABLE, id="5xx"),
    pytest.param(None, {}, ValidationVerdict.UNREACHABLE, id="no answer"),
])
def test_validation_answers_are_classified(status: int | None, headers: dict[str, str],
                                           verdict: ValidationVerdict) -> None:
    outcome = classify_validation(status=status, headers=headers, body={"login": "octo"},
                                  account_fields=("login",), now=NOW)
    assert verdict == outcome.verdict


def test_validation_reports_the_account() -> None:
    outcome = classify_validation(status=200, headers={}, body={"login": "octo"},
                                  account_fields=("login",), now=NOW)
    assert "octo" == outcome.account


def test_rate_limit_reset_becomes_retry_after() -> None:
    reset = NOW.timestamp() + 120
    outcome = classify_validation(status=403, headers={"x-ratelimit-remaining": "0",
                                                       "x-ratelimit-reset": str(reset)},
                                  body=None, account_fields=(), now=NOW)
    assert 120 == outcome.retry_after


def test_due_time_is_never_later_than_expiry_minus_refresh_before() -> None:
    expiry = NOW + dt.timedelta(hours=8)
    for i in range(200):
        due = timing.due_at(expiry=expiry, refresh_before=dt.timedelta(minutes=15),
                                issued_at=NOW, seed=f"link-{i}")
        assert due is not None
        assert expiry - dt.timedelta(minutes=15) - dt.timedelta(minutes=48) <= due <= expiry - dt.timedelta(minutes=15)


def test_due_time_is_spread_across_links() -> None:
    expiry = NOW + dt.timedelta(hours=8)
    dues = {timing.due_at(expiry=expiry, refresh_before=dt.timedelta(minutes=15),
                              issued_at=NOW, seed=f"link-{i}") for i in range(50)}
    assert 50 == len(dues)


@pytest.mark.parametrize(("failures", "retry_after", "low", "high"), [
    pytest.param(1, None, 1.6, 2.4, id="first failure waits about the base"),
    pytest.param(3, None, 6.4, 9.6, id="doubles each time"),
    pytest.param(20, None, 240, 360, id="capped"),
    pytest.param(1, 30.0, 30, 30, id="Retry-After wins when longer"),
])
def test_backoff(failures: int, retry_after: float | None, low: float, high: float) -> None:
    wait = timing.backoff(failures=failures, seed="x", retry_after=retry_after)
    assert low <= wait <= high


# --- the decision chain -------------------------------------------------------------------

PROVIDER = parse_provider("gh", {"type": "github", "clientID": "c", "baseURL": "https://ghe.example"})
LINK = parse_link({"providerName": "gh", "secretName": "tok"})
TEAM_A = parse_provider("gh", {"type": "github", "clientID": "c", "baseURL": "https://ghe.example",
                               "namespaceSelector": {"matchLabels": {"team": "a"}}})


def tokens(*, expires_in: float | None = 8 * 3600, refresh: str | None = "r1", access: str = "a1") -> TokenSet:
    return TokenSet(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if refresh else None,
        expiry=NOW + dt.timedelta(seconds=expires_in) if expires_in is not None else None,
    )


def validated(access: str = "a1", reason: ValidatedReason = ValidatedReason.VALID) -> Validation:
    return Validation(reason=reason, message="m", at=NOW, token_fingerprint=SecretStr(access).fingerprint())


def inp(**kw: Any) -> LinkInput:
    base: dict[str, Any] = dict(
        now=NOW, uid="u1", generation=1, spec=LINK, spec_error=None,
        provider=ProviderView(spec=PROVIDER), secret_found=True, tokens=tokens(), secret_error=None,
        refresh_requested=None, status={}, memory=LinkMemory(validation=validated()),
    )
    base.update(kw)
    return LinkInput(**base)


def conditions(plan: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in plan.conditions}


S = dt.timedelta(seconds=1)
DUE = NOW + dt.timedelta(hours=8) - dt.timedelta(minutes=15)  # default token: expiry - refreshBefore
NEXT_VALIDATION = NOW + dt.timedelta(hours=1)
OK = ("True", "TokenCurrent")
NOT_YET_DUE = ("True", "NotYetDue")
VALID = ("True", "Valid")
PENDING = ("Unknown", "Pending")
BACKOFF = Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW + 30 * S)
DEAD = SecretStr("r1").fingerprint()
Row = tuple[str, LinkInput, Action, tuple[str, str], "tuple[str, str] | None", "tuple[str, str] | None",
            "dt.datetime | None"]

# Each row: the sentence, the input, then the whole decision — action, Ready, Refreshable,
# Validated (None: no such condition) and when to decide again (None: on the next event).
CHAIN: list[Row] = [
    ("nothing to do for a fresh validated token; wake for the next validation",
     inp(), Action.NONE, OK, NOT_YET_DUE, VALID, NEXT_VALIDATION),
    ("refresh because the token is within refreshBefore of expiry",
     inp(tokens=tokens(expires_in=600)), Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("refresh because the Secret has no expiry",
     inp(tokens=tokens(expires_in=None)), Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("refresh because the annotation asks",
     inp(refresh_requested="r-1"), Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("no refresh when the annotation was already acted on",
     inp(refresh_requested="r-1", status={"lastRefreshRequest": "r-1"}),
     Action.NONE, OK, NOT_YET_DUE, VALID, NEXT_VALIDATION),
    ("no refresh when suspended; wake when the token expires",
     inp(spec=parse_link({"providerName": "gh", "secretName": "tok", "suspend": True}), tokens=tokens(expires_in=60)),
     Action.NONE, OK, ("False", "Suspended"), VALID, NOW + 60 * S),
    ("no refresh without a refresh token; wake when the token expires",
     inp(tokens=tokens(expires_in=60, refresh=None)), Action.NONE, OK, ("False", "NoRefreshToken"), VALID,
     NOW + 60 * S),
    ("no refresh of a grant the provider declared dead",
     inp(tokens=tokens(expires_in=60), memory=LinkMemory(dead_grant_fingerprint=DEAD, validation=validated())),
     Action.NONE, ("False", "ReauthRequired"), ("False", "ReauthRequired"), VALID, NOW + 60 * S),
    ("refresh again once the user wrote a new grant",
     inp(tokens=tokens(expires_in=60, refresh="r2"), memory=LinkMemory(dead_grant_fingerprint=DEAD,
                                                                       validation=validated())),
     Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("wait during transient backoff, until it ends",
     inp(tokens=tokens(expires_in=60), memory=LinkMemory(validation=validated(), failure=BACKOFF)),
     Action.NONE, OK, ("False", "RetryingTransientError"), VALID, NOW + 30 * S),
    ("retry once the backoff has passed",
     inp(memory=LinkMemory(validation=validated(), failure=Failure(
         RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW - S))),
     Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("a failure of a refresh token the Secret no longer holds is not retried",
     inp(memory=LinkMemory(validation=validated(), failure=Failure(
         RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW - S, SecretStr("r0").fingerprint()))),
     Action.NONE, OK, NOT_YET_DUE, VALID, NEXT_VALIDATION),
    ("a refresh request waits for the backoff of a failed refresh (it never skips it)",
     inp(tokens=tokens(expires_in=60), refresh_requested="r-2",
         memory=LinkMemory(validation=validated(), failure=BACKOFF)),
     Action.NONE, OK, ("False", "RetryingTransientError"), VALID, NOW + 30 * S),
    ("a refresh request waits while the provider's credentials are rejected",
     inp(tokens=tokens(expires_in=60), refresh_requested="r-2",
         provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW + 30 * S)),
     Action.NONE, OK, ("False", "ProviderCredentialsRejected"), VALID, NOW + 30 * S),
    ("wait while the provider's credentials are rejected, until its backoff ends",
     inp(tokens=tokens(expires_in=60), provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW + 30 * S)),
     Action.NONE, OK, ("False", "ProviderCredentialsRejected"), VALID, NOW + 30 * S),
    ("wait while another replica holds a claim for long, and say so, until it ends",
     inp(tokens=tokens(expires_in=60), claimed_by="other", claimed_until=NOW + 40 * S,
         claimed_since=NOW - 20 * S),
     Action.NONE, OK, ("False", "ClaimedElsewhere"), VALID, NOW + 40.5 * S),
    ("wait quietly while another replica's fresh claim runs (a refresh in progress elsewhere)",
     inp(tokens=tokens(expires_in=60), claimed_by="other", claimed_until=NOW + 58 * S,
         claimed_since=NOW - 2 * S),
     Action.NONE, OK, NOT_YET_DUE, VALID, NOW + 58.5 * S),
    ("another replica's claim does not matter when nothing is due",
     inp(claimed_by="other", claimed_until=NOW + 40 * S), Action.NONE, OK, NOT_YET_DUE, VALID, NEXT_VALIDATION),
    ("rewrite the output formats when they do not match the token",
     inp(formats_stale=True), Action.WRITE_FORMATS, OK, NOT_YET_DUE, VALID, DUE),
    ("refresh before rewriting formats when both are due",
     inp(formats_stale=True, tokens=tokens(expires_in=60)), Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("validate a token never validated",
     inp(memory=LinkMemory()), Action.VALIDATE, OK, NOT_YET_DUE, PENDING, DUE),
    ("validate a token that changed since the last validation",
     inp(tokens=tokens(access="a2")), Action.VALIDATE, OK, NOT_YET_DUE, PENDING, DUE),
    ("ready is false for an expired static token",
     inp(tokens=tokens(expires_in=-5, refresh=None)), Action.NONE, ("False", "TokenExpired"),
     ("False", "NoRefreshToken"), VALID, NEXT_VALIDATION),
    ("ready is false for a token the provider rejected",
     inp(memory=LinkMemory(validation=validated(reason=ValidatedReason.INVALID))),
     Action.NONE, ("False", "TokenRejected"), NOT_YET_DUE, ("False", "Invalid"), NEXT_VALIDATION),
    ("an expired token waiting out a backoff is not validated first: wake when the backoff ends, "
     "not at the overdue validation (that was a busy loop)",
     inp(tokens=tokens(expires_in=-5), memory=LinkMemory(failure=BACKOFF, validation=Validation(
         reason=ValidatedReason.VALID, message="m", at=NOW - dt.timedelta(hours=2),
         token_fingerprint=SecretStr("a1").fingerprint()))),
     Action.NONE, ("False", "TokenExpired"), ("False", "RetryingTransientError"), VALID, NOW + 30 * S),
    ("secret missing: look again later",
     inp(secret_found=False, tokens=None), Action.NONE, ("False", "SecretNotFound"), None, None, NOW + 30 * S),
    ("secret invalid: wait for it to change",
     inp(tokens=None, secret_error="key access_token is missing"), Action.NONE, ("False", "SecretInvalid"),
     None, None, None),
    ("provider missing", inp(provider=None), Action.NONE, ("False", "ProviderNotFound"), None, None, None),
    ("provider not ready", inp(provider=ProviderView(spec=None, not_ready_message="x")), Action.NONE,
     ("False", "ProviderNotReady"), None, None, None),
    ("a provider that does not select the link's namespace is not used, even for a due token",
     inp(provider=ProviderView(spec=TEAM_A), namespace_labels={"team": "b"}, tokens=tokens(expires_in=60),
         refresh_requested="r-3"), Action.NONE, ("False", "ProviderNotAllowed"), None, None, None),
    ("a namespace not known yet is not selected",
     inp(provider=ProviderView(spec=TEAM_A), namespace_labels=None), Action.NONE,
     ("False", "ProviderNotAllowed"), None, None, None),
    ("a provider that selects the link's namespace is used",
     inp(provider=ProviderView(spec=TEAM_A), namespace_labels={"team": "a"}, tokens=tokens(expires_in=60)),
     Action.REFRESH, OK, NOT_YET_DUE, VALID, None),
    ("a provider without a selector serves a namespace not known yet",
     inp(namespace_labels=None), Action.NONE, OK, NOT_YET_DUE, VALID, NEXT_VALIDATION),
]


@pytest.mark.parametrize(("case", "action", "ready", "refreshable", "validated_", "wake_at"),
                         [c[1:] for c in CHAIN], ids=[c[0] for c in CHAIN])
def test_decision_chain(case: LinkInput, action: Action, ready: tuple[str, str],
                        refreshable: tuple[str, str] | None, validated_: tuple[str, str] | None,
                        wake_at: dt.datetime | None) -> None:
    plan = decide(case)
    got = conditions(plan)
    assert (action, ready, refreshable, validated_, wake_at) == (
        plan.action, got["Ready"], got.get("Refreshable"), got.get("Validated"), plan.wake_at)


@pytest.mark.parametrize(("case", "budgeted"), [
    pytest.param(inp(tokens=tokens(expires_in=None)), True, id="a Secret without an expiry spends the budget"),
    pytest.param(inp(refresh_requested="r-1"), True, id="a refresh request spends the budget"),
    pytest.param(inp(tokens=tokens(expires_in=600)), False, id="a due refresh does not"),
    pytest.param(inp(memory=LinkMemory(validation=validated(), failure=Failure(
        RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW - S))), False,
        id="a retry after backoff does not (the backoff bounds it)"),
])
def test_calls_that_are_not_due_are_budgeted(case: LinkInput, budgeted: bool) -> None:
    plan = decide(case)
    assert (Action.REFRESH, budgeted) == (plan.action, plan.budgeted)


def test_a_rate_limited_validation_keeps_the_link_ready() -> None:
    plan = decide(inp(memory=LinkMemory(validation=Validation(
        reason=ValidatedReason.RATE_LIMITED, message="m", at=NOW,
        token_fingerprint=SecretStr("a1").fingerprint(), retry_at=NOW + dt.timedelta(minutes=5)))))
    assert {"Ready": ("True", "TokenCurrent"), "Validated": ("Unknown", "RateLimited")} == {
        k: v for k, v in conditions(plan).items() if k != "Refreshable"}


def test_the_next_wake_up_is_after_now_and_no_later_than_the_due_time() -> None:
    """Never later than the refresh is due, and never now (that would be a busy loop)."""
    for memory in (LinkMemory(validation=validated()), LinkMemory(validation=Validation(
            reason=ValidatedReason.VALID, message="m", at=NOW - dt.timedelta(minutes=59),
            token_fingerprint=SecretStr("a1").fingerprint()))):
        plan = decide(inp(memory=memory))
        assert Action.NONE == plan.action
        assert plan.wake_at is not None and NOW < plan.wake_at <= DUE


def test_status_is_stable_when_nothing_changed() -> None:
    first = render_status(decide(inp()), existing={}, now=NOW, generation=1)
    later = NOW + dt.timedelta(minutes=5)
    second = render_status(decide(inp(status=first, now=later)), existing=first, now=later, generation=1)
    assert first == second


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = render_status(decide(inp()), existing={}, now=NOW, generation=1)
    later = NOW + dt.timedelta(minutes=5)
    flipped = render_status(decide(inp(now=later, tokens=tokens(expires_in=-1, refresh=None), status=first)),
                            existing=first, now=later, generation=1)
    ready = next(c for c in flipped["conditions"] if c["type"] == "Ready")
    assert "2026-11-27T12:05:00Z" == ready["lastTransitionTime"]


def test_after_a_refresh_the_link_says_refreshed() -> None:
    memory = LinkMemory(validation=validated(), last_refresh=NOW,
                        last_refresh_fingerprint=SecretStr("a1").fingerprint())
    assert ("True", "Refreshed") == conditions(decide(inp(memory=memory)))["Refreshable"]


def test_an_unfinished_refresh_does_not_rewrite_refreshable() -> None:
    existing = {"conditions": [{"type": "Refreshable", "status": "False", "reason": "RetryingTransientError",
                                "message": "m", "lastTransitionTime": "2026-11-27T11:00:00Z"}]}
    plan = decide(inp(tokens=tokens(expires_in=60), status=existing))
    assert (Action.REFRESH, ("False", "RetryingTransientError")) == (plan.action, conditions(plan)["Refreshable"])


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "garbage", "0001-01-01T00:30:00+01:00"],
                         ids=["no time zone", "not a time", "before year 1 in UTC"])
def test_an_unparsable_status_time_is_ignored_not_a_crash(value: str) -> None:
    """Status is written by anyone with the status subresource: a bad time there is treated
    as absent (security review, bad input 42)."""
    plan = decide(inp(memory=LinkMemory(), status={"lastRefreshTime": value, "lastValidationTime": value}))
    assert Action.VALIDATE == plan.action


@pytest.mark.parametrize(("failures", "wait"), [
    pytest.param(1, 1.0, id="a watch that failed once starts again after a second"),
    pytest.param(3, 4.0, id="doubling"),
    pytest.param(20, 30.0, id="at most 30 s"),
])
def test_watch_retry(failures: int, wait: float) -> None:
    assert wait == timing.watch_retry(failures)


@pytest.mark.parametrize(("attempt", "retry_after", "wait"), [
    pytest.param(1, None, 0.5, id="listing the providers again: half a second more each attempt"),
    pytest.param(3, 7.0, 7.0, id="the API server's Retry-After when it names one"),
    pytest.param(100, None, 10.0, id="at most 10 s"),
])
def test_listing_retry(attempt: int, retry_after: float | None, wait: float) -> None:
    assert wait == timing.listing_retry(attempt, retry_after=retry_after)


@pytest.mark.parametrize(("send_before", "now", "expected"), [
    pytest.param(None, 100.0, 30.0, id="no claim to respect: the provider deadline"),
    pytest.param(200.0, 100.0, 30.0, id="plenty of lease left: the provider deadline"),
    pytest.param(115.0, 100.0, 15.0, id="15 s left before the cap: the call may take 15 s"),
    pytest.param(102.0, 100.0, 2.0, id="exactly the minimum window left: sent with 2 s"),
    pytest.param(101.9, 100.0, None, id="less than the minimum window left: not sent"),
    pytest.param(90.0, 100.0, None, id="the cap already passed while the call waited: not sent"),
])
def test_a_token_call_is_sent_only_with_time_left_in_its_lease(send_before: float | None, now: float,
                                                                 expected: float | None) -> None:
    budget = timing.call_budget(send_before=send_before, now=now, deadline=30.0)
    assert expected == (None if budget is None else pytest.approx(budget))
