"""The steps of the decision chain (policy/deciding.py), one table per chain and one row
per sentence: each step either answers its question or passes (None). The whole-decision
table in test_policy.py proves the chains put together still decide what they did."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from externalauth.model.reasons import ReadyReason, RefreshableReason, ValidatedReason
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_link
from externalauth.policy import deciding, timing
from externalauth.policy.deciding import Action, Chore, Failure, LinkInput, LinkMemory, ProviderView, Validation
from tests.unit.policy.test_policy import NOW, PROVIDER, S, inp, tokens, validated

SUSPENDED = parse_link({"providerName": "gh", "secretName": "tok", "suspend": True})
DEAD = SecretStr("r1").fingerprint()
DUE = NOW + dt.timedelta(hours=8) - dt.timedelta(minutes=15)
BACKOFF = Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW + 30 * S)
EXPIRING = tokens(expires_in=60)
#: A token this replica saw issued is refreshed up to 10% of its lifetime early (spread).
REFRESHED_DUE = timing.due_at(expiry=NOW + dt.timedelta(hours=8), refresh_before=dt.timedelta(minutes=15),
                              issued_at=NOW, seed="u1/2026-11-27T20:00:00Z")

# --- 1. guards ---------------------------------------------------------------------------

GuardRow = tuple[str, Callable[[LinkInput], deciding.Blocked | None], LinkInput,
                 "tuple[ReadyReason, dt.datetime | None] | None"]
GUARDS: list[GuardRow] = [
    ("spec_invalid blocks a link whose spec did not parse",
     deciding.spec_invalid, inp(spec=None, spec_error="bad"), (ReadyReason.INVALID_SPEC, None)),
    ("spec_invalid passes a parsed spec", deciding.spec_invalid, inp(), None),
    ("provider_missing blocks a link whose provider does not exist",
     deciding.provider_missing, inp(provider=None), (ReadyReason.PROVIDER_NOT_FOUND, None)),
    ("provider_missing passes a link whose provider exists", deciding.provider_missing, inp(), None),
    ("provider_not_ready blocks a link whose provider is unusable",
     deciding.provider_not_ready, inp(provider=ProviderView(spec=None, not_ready_message="x")),
     (ReadyReason.PROVIDER_NOT_READY, None)),
    ("provider_not_ready passes a usable provider", deciding.provider_not_ready, inp(), None),
    ("secret_missing blocks a link without its Secret, and looks again later",
     deciding.secret_missing, inp(secret_found=False, tokens=None),
     (ReadyReason.SECRET_NOT_FOUND, NOW + 30 * S)),
    ("secret_missing passes a link whose Secret exists", deciding.secret_missing, inp(), None),
    ("secret_not_opted_in blocks a Secret without the provider label",
     deciding.secret_not_opted_in, inp(secret_opted_in=False), (ReadyReason.SECRET_NOT_OPTED_IN, None)),
    ("secret_not_opted_in passes an opted-in Secret", deciding.secret_not_opted_in, inp(), None),
    ("secret_unusable blocks a Secret without usable tokens",
     deciding.secret_unusable, inp(tokens=None, secret_error="no access_token"), (ReadyReason.SECRET_INVALID, None)),
    ("secret_unusable passes a Secret with tokens", deciding.secret_unusable, inp(), None),
    ("secret_unwritable blocks a Secret that could not take refreshed tokens",
     deciding.secret_unwritable, inp(secret_unwritable="too big"), (ReadyReason.SECRET_INVALID, None)),
    ("secret_unwritable passes a suspended link (it would not write)",
     deciding.secret_unwritable, inp(secret_unwritable="too big", spec=SUSPENDED), None),
    ("secret_unwritable passes a token without refresh token (it would not write)",
     deciding.secret_unwritable, inp(secret_unwritable="too big", tokens=tokens(refresh=None)), None),
]


@pytest.mark.parametrize(("step", "case", "expected"), [r[1:] for r in GUARDS], ids=[r[0] for r in GUARDS])
def test_guard_steps(step: Callable[[LinkInput], deciding.Blocked | None], case: LinkInput,
                     expected: tuple[ReadyReason, dt.datetime | None] | None) -> None:
    blocked = step(case)
    assert expected == (None if blocked is None else (blocked.reason, blocked.recheck_at))


def test_the_first_guard_that_holds_wins() -> None:
    """Without a provider, the missing Secret is not worth a word."""
    plan = deciding.decide(inp(provider=None, secret_found=False, tokens=None))
    assert ("ProviderNotFound", None) == (plan.conditions[0].reason, plan.wake_at)


# --- 2. refresh ----------------------------------------------------------------------------

RefreshRow = tuple[str, Callable[[deciding.Facts], deciding.Refreshing | None], LinkInput,
                   "tuple[str, str, Action, dt.datetime | None] | None"]
REFRESH: list[RefreshRow] = [
    ("suspended: never refreshed", deciding.suspended, inp(spec=SUSPENDED, tokens=EXPIRING),
     ("False", RefreshableReason.SUSPENDED, Action.NONE, None)),
    ("suspended passes a link that is not", deciding.suspended, inp(tokens=EXPIRING), None),
    ("no_refresh_token: never refreshed", deciding.no_refresh_token, inp(tokens=tokens(refresh=None)),
     ("False", RefreshableReason.NO_REFRESH_TOKEN, Action.NONE, None)),
    ("no_refresh_token passes a Secret with one", deciding.no_refresh_token, inp(), None),
    ("grant_dead: the refresh token the provider refused is not sent again", deciding.grant_dead,
     inp(memory=LinkMemory(dead_grant_fingerprint=DEAD)),
     ("False", RefreshableReason.REAUTH_REQUIRED, Action.NONE, None)),
    ("grant_dead passes once the user wrote a new grant", deciding.grant_dead,
     inp(tokens=tokens(refresh="r2"), memory=LinkMemory(dead_grant_fingerprint=DEAD)), None),
    ("grant_dead: a refresh token the status names dead (another replica, or before a restart) is not sent",
     deciding.grant_dead, inp(refresh_digest="d1", status={"deadGrantDigest": "d1"}),
     ("False", RefreshableReason.REAUTH_REQUIRED, Action.NONE, None)),
    ("grant_dead passes when the status names another refresh token dead", deciding.grant_dead,
     inp(refresh_digest="d2", status={"deadGrantDigest": "d1"}), None),
    ("client_rejected waits until the provider's backoff ends", deciding.client_rejected,
     inp(tokens=EXPIRING, provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW + 30 * S)),
     ("False", RefreshableReason.PROVIDER_CREDENTIALS_REJECTED, Action.NONE, NOW + 30 * S)),
    ("client_rejected holds a request too (contract §9.16: requests never skip a provider's backoff)",
     deciding.client_rejected,
     inp(refresh_requested="r", provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW + 30 * S)),
     ("False", "ProviderCredentialsRejected", Action.NONE, NOW + 30 * S)),
    ("client_rejected passes once the backoff ended", deciding.client_rejected,
     inp(provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW)), None),
    ("backing_off waits for the backoff to end", deciding.backing_off,
     inp(memory=LinkMemory(failure=BACKOFF)),
     ("False", RefreshableReason.RETRYING_TRANSIENT_ERROR, Action.NONE, NOW + 30 * S)),
    ("backing_off holds a request too (contract §9.16)", deciding.backing_off,
     inp(refresh_requested="r", memory=LinkMemory(failure=BACKOFF)),
     ("False", "RetryingTransientError", Action.NONE, NOW + 30 * S)),
    ("backing_off passes a failure of a refresh token the Secret no longer holds", deciding.backing_off,
     inp(memory=LinkMemory(failure=Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW + 30 * S,
                                           SecretStr("r0").fingerprint()))), None),
    ("claimed_elsewhere says so of a claim held long, and waits past its end", deciding.claimed_elsewhere,
     inp(tokens=EXPIRING, claimed_by="o", claimed_until=NOW + 40 * S, claimed_since=NOW - 20 * S),
     ("False", RefreshableReason.CLAIMED_ELSEWHERE, Action.NONE, NOW + 40.5 * S)),
    ("claimed_elsewhere keeps quiet about a young claim", deciding.claimed_elsewhere,
     inp(tokens=EXPIRING, claimed_by="o", claimed_until=NOW + 58 * S, claimed_since=NOW - 2 * S),
     ("True", RefreshableReason.NOT_YET_DUE, Action.NONE, NOW + 58.5 * S)),
    ("claimed_elsewhere passes when nothing is due", deciding.claimed_elsewhere,
     inp(claimed_by="o", claimed_until=NOW + 40 * S), None),
    ("claimed_elsewhere passes an ended claim", deciding.claimed_elsewhere,
     inp(tokens=EXPIRING, claimed_by="o", claimed_until=NOW), None),
    ("refresh_now when within refreshBefore of expiry", deciding.refresh_now, inp(tokens=EXPIRING),
     ("True", RefreshableReason.NOT_YET_DUE, Action.REFRESH, None)),
    ("refresh_now without a known expiry", deciding.refresh_now, inp(tokens=tokens(expires_in=None)),
     ("True", RefreshableReason.NOT_YET_DUE, Action.REFRESH, None)),
    ("refresh_now when asked", deciding.refresh_now, inp(refresh_requested="r"),
     ("True", RefreshableReason.NOT_YET_DUE, Action.REFRESH, None)),
    ("refresh_now retries a failure whose backoff passed", deciding.refresh_now,
     inp(memory=LinkMemory(failure=Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW - S))),
     ("True", RefreshableReason.NOT_YET_DUE, Action.REFRESH, None)),
    ("refresh_now passes a token not yet due", deciding.refresh_now, inp(), None),
    ("refresh_now passes a request already acted on", deciding.refresh_now,
     inp(refresh_requested="r", status={"lastRefreshRequest": "r"}), None),
    ("not_yet_due waits for the due time", deciding.not_yet_due, inp(),
     ("True", RefreshableReason.NOT_YET_DUE, Action.NONE, DUE)),
    ("not_yet_due says Refreshed after this replica refreshed the token", deciding.not_yet_due,
     inp(memory=LinkMemory(last_refresh=NOW, last_refresh_fingerprint=SecretStr("a1").fingerprint())),
     ("True", RefreshableReason.REFRESHED, Action.NONE, REFRESHED_DUE)),
    ("not_yet_due wakes for a rate-limited request before the due time", deciding.not_yet_due,
     inp(refresh_requested="r4", memory=LinkMemory(asked=(NOW - 30 * S, NOW - 20 * S, NOW - 10 * S))),
     ("True", RefreshableReason.NOT_YET_DUE, Action.NONE, NOW + 30 * S)),
]


@pytest.mark.parametrize(("step", "case", "expected"), [r[1:] for r in REFRESH], ids=[r[0] for r in REFRESH])
def test_refresh_steps(step: Callable[[deciding.Facts], deciding.Refreshing | None], case: LinkInput,
                       expected: tuple[str, str, Action, dt.datetime | None] | None) -> None:
    got = step(deciding.facts_of(case))
    assert expected == (None if got is None else (
        got.condition.status, got.condition.reason, got.action, got.next_refresh))


def test_refresh_says_why() -> None:
    whys = {deciding.refresh_now(deciding.facts_of(c)).why  # type: ignore[union-attr]
            for c in (inp(tokens=EXPIRING), inp(tokens=tokens(expires_in=None)), inp(refresh_requested="r"),
                      inp(memory=LinkMemory(failure=Failure(RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1,
                                                            NOW - S))))}
    assert {"the token is due for refresh", "no expiry known: refresh to learn it",
            "refresh requested by annotation", "retrying after a failed refresh"} == whys


# --- 3. chores ----------------------------------------------------------------------------

ChoreRow = tuple[str, Callable[[deciding.Facts], Chore | None], LinkInput, "Action | None"]
CHORES: list[ChoreRow] = [
    ("formats_stale rewrites keys that do not match the token", deciding.formats_stale, inp(formats_stale=True),
     Action.WRITE_FORMATS),
    ("formats_stale passes matching keys", deciding.formats_stale, inp(), None),
    ("validation_due validates a token never validated", deciding.validation_due, inp(memory=LinkMemory()),
     Action.VALIDATE),
    ("validation_due passes a token validated within the interval", deciding.validation_due, inp(), None),
    ("validation_due does not validate an expired token that will be refreshed", deciding.validation_due,
     inp(memory=LinkMemory(), tokens=tokens(expires_in=-5)), None),
    ("validation_due validates an expired token that is never refreshed", deciding.validation_due,
     inp(memory=LinkMemory(), tokens=tokens(expires_in=-5, refresh=None)), Action.VALIDATE),
    ("validation_due passes a link that does not validate", deciding.validation_due,
     inp(memory=LinkMemory(), spec=parse_link({"providerName": "gh", "secretName": "tok", "validate": False})),
     None),
]


@pytest.mark.parametrize(("step", "case", "expected"), [r[1:] for r in CHORES], ids=[r[0] for r in CHORES])
def test_chore_steps(step: Callable[[deciding.Facts], Chore | None], case: LinkInput,
                     expected: Action | None) -> None:
    got = step(deciding.facts_of(case))
    assert expected == (None if got is None else got.action)


# --- 4. ready -----------------------------------------------------------------------------

def _rejected() -> LinkMemory:
    return LinkMemory(validation=validated(reason=ValidatedReason.INVALID))


ReadyRow = tuple[str, Callable[[deciding.Facts], Any], LinkInput, "tuple[str, str] | None"]
READY: list[ReadyRow] = [
    ("token_lost: the dead grant's successor could not be stored", deciding.token_lost,
     inp(memory=LinkMemory(dead_grant_fingerprint=DEAD, lost="gone")), ("False", ReadyReason.SECRET_INVALID)),
    ("token_lost passes a dead grant with nothing lost", deciding.token_lost,
     inp(memory=LinkMemory(dead_grant_fingerprint=DEAD)), None),
    ("reauth_required: the provider refused the refresh token", deciding.reauth_required,
     inp(memory=LinkMemory(dead_grant_fingerprint=DEAD)), ("False", ReadyReason.REAUTH_REQUIRED)),
    ("reauth_required passes a live grant", deciding.reauth_required, inp(), None),
    ("token_expired: the access token has expired", deciding.token_expired, inp(tokens=tokens(expires_in=0)),
     ("False", ReadyReason.TOKEN_EXPIRED)),
    ("token_expired passes a token not expired", deciding.token_expired, inp(), None),
    ("token_rejected: the provider said the token is invalid", deciding.token_rejected, inp(memory=_rejected()),
     ("False", ReadyReason.TOKEN_REJECTED)),
    ("token_rejected passes a valid token", deciding.token_rejected, inp(), None),
    ("token_current: otherwise Ready", deciding.token_current, inp(), ("True", ReadyReason.TOKEN_CURRENT)),
]


@pytest.mark.parametrize(("step", "case", "expected"), [r[1:] for r in READY], ids=[r[0] for r in READY])
def test_ready_steps(step: Callable[[deciding.Facts], Any], case: LinkInput,
                     expected: tuple[str, str] | None) -> None:
    got = step(deciding.facts_of(case))
    assert expected == (None if got is None else (got.status, got.reason))


def test_ready_says_what_is_worth_knowing_beside_it() -> None:
    got = deciding.token_current(deciding.facts_of(inp(
        format_problem="no account", provider=ProviderView(spec=PROVIDER, clock_skew_message="clock 90s ahead"))))
    assert ("the Secret holds a current access token; no output format keys: no account; clock 90s ahead"
            == got.message)


# --- 5. when next -------------------------------------------------------------------------

WakeRow = tuple[str, LinkInput, Action, "dt.datetime | None", "dt.datetime | None"]
WAKES: list[WakeRow] = [
    ("an action: wake at the next refresh only", inp(memory=LinkMemory()), Action.VALIDATE, DUE, DUE),
    ("nothing to do: wake at the next validation when it comes first", inp(), Action.NONE, DUE,
     NOW + dt.timedelta(hours=1)),
    ("nothing to do: wake at expiry when it comes first", inp(tokens=tokens(expires_in=60, refresh=None)),
     Action.NONE, None, NOW + 60 * S),
    ("an expired token that will be refreshed: wake for the refresh, not an overdue validation",
     inp(tokens=tokens(expires_in=-5), memory=LinkMemory(validation=Validation(
         reason=ValidatedReason.VALID, message="m", at=NOW - dt.timedelta(hours=2),
         token_fingerprint=SecretStr("a1").fingerprint()))), Action.NONE, NOW + 30 * S, NOW + 30 * S),
    ("nothing to do for an expired token without validation: on the next event",
     inp(tokens=tokens(expires_in=-1, refresh=None),
         spec=parse_link({"providerName": "gh", "secretName": "tok", "validate": False})), Action.NONE, None, None),
]


@pytest.mark.parametrize(("case", "action", "next_refresh", "expected"), [r[1:] for r in WAKES],
                         ids=[r[0] for r in WAKES])
def test_wake_at(case: LinkInput, action: Action, next_refresh: dt.datetime | None,
                 expected: dt.datetime | None) -> None:
    assert expected == deciding.wake_at(deciding.facts_of(case), action=action, next_refresh=next_refresh)


FieldRow = tuple[str, LinkInput, Action, "dt.datetime | None", dict[str, Any]]
FIELDS: list[FieldRow] = [
    ("a fresh token: its expiry and the next refresh", inp(), Action.NONE, DUE,
     {"expiresAt": "2026-11-27T20:00:00Z", "refreshTokenExpiresAt": None, "deadGrantDigest": None,
      "nextRefreshTime": "2026-11-27T19:45:00Z",
      "lastValidationTime": "2026-11-27T12:00:00Z"}),
    ("a request that cannot be honoured is acknowledged, no next refresh",
     inp(spec=SUSPENDED, refresh_requested="r"), Action.NONE, DUE,
     {"expiresAt": "2026-11-27T20:00:00Z", "refreshTokenExpiresAt": None, "deadGrantDigest": None,
      "nextRefreshTime": None,
      "lastRefreshRequest": "r", "lastValidationTime": "2026-11-27T12:00:00Z"}),
    ("a verdict on this token is published with its digest and account",
     inp(memory=LinkMemory(validation=Validation(reason=ValidatedReason.VALID, message="m", at=NOW,
                                                 token_fingerprint=SecretStr("a1").fingerprint(),
                                                 account="octo", digest="d"))), Action.NONE, None,
     {"expiresAt": "2026-11-27T20:00:00Z", "refreshTokenExpiresAt": None, "deadGrantDigest": None,
      "nextRefreshTime": None,
      "lastValidationTime": "2026-11-27T12:00:00Z", "validatedTokenDigest": "d", "account": "octo"}),
    ("a verdict on an older token is not published",
     inp(tokens=tokens(access="a2")), Action.VALIDATE, DUE,
     {"expiresAt": "2026-11-27T20:00:00Z", "refreshTokenExpiresAt": None, "deadGrantDigest": None,
      "nextRefreshTime": "2026-11-27T19:45:00Z"}),
    ("a dead grant is published with the refresh token's digest, for every replica",
     inp(refresh_digest="d1", memory=LinkMemory(dead_grant_fingerprint=DEAD)), Action.NONE, None,
     {"expiresAt": "2026-11-27T20:00:00Z", "refreshTokenExpiresAt": None, "nextRefreshTime": None,
      "deadGrantDigest": "d1"}),
]


@pytest.mark.parametrize(("case", "action", "next_refresh", "expected"), [r[1:] for r in FIELDS],
                         ids=[r[0] for r in FIELDS])
def test_status_fields(case: LinkInput, action: Action, next_refresh: dt.datetime | None,
                       expected: dict[str, Any]) -> None:
    assert expected == deciding.status_fields(deciding.facts_of(case), action=action, next_refresh=next_refresh)
