"""What a link's status tells its user (policy/deciding.py): for every reason the chains
give, the condition a user reads with its key facts — the provider's and the Secret's
names, the label to add, when another replica's claim ends, what to do about it — and
the plan around it (why, the fields a blocked link clears, the flags the engine reads).
Also the edges of "when is a validation due" (the interval, a provider's retry time, a
token another writer stored and its grace) and the status as rendered."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from externalauth.model.reasons import RefreshableReason, ValidatedReason
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_link
from externalauth.policy import deciding
from externalauth.policy.deciding import Action, Failure, LinkInput, LinkMemory, ProviderView, Validation, decide
from tests.unit.policy.test_policy import NOW, PROVIDER, TEAM_A, S, inp, tokens, validated

H = dt.timedelta(hours=1)
FP = SecretStr("a1").fingerprint()  # the access token of test_policy's default Secret
OTHER_FP = SecretStr("a0").fingerprint()
DEAD = SecretStr("r1").fingerprint()
NO_VALIDATION = parse_link({"providerName": "gh", "secretName": "tok", "validate": False})
SUSPENDED = parse_link({"providerName": "gh", "secretName": "tok", "suspend": True})
CLAMP = (" (refreshBefore is more than half the token's lifetime: it is refreshed at half its lifetime "
         "instead)")


def _refreshed_here(at: dt.datetime = NOW, fp: str = FP) -> LinkMemory:
    return LinkMemory(validation=validated(), last_refresh=at, last_refresh_fingerprint=fp)


# --- 1. a link that cannot be worked on: Ready=False, and why -------------------------------

Blocked = tuple[str, LinkInput, tuple[str, str]]
BLOCKED: list[Blocked] = [
    ("a spec that did not parse says what is wrong with it",
     inp(spec=None, spec_error="spec.secretName: required"), ("InvalidSpec", "spec.secretName: required")),
    ("a spec that did not parse, nothing more known", inp(spec=None), ("InvalidSpec", "the spec is invalid")),
    ("a missing provider is named", inp(provider=None), ("ProviderNotFound", "ExternalAuthProvider gh does not exist")),
    ("a provider that is not ready is named, with why",
     inp(provider=ProviderView(spec=None, not_ready_message="discovery failed: HTTP 503")),
     ("ProviderNotReady", "ExternalAuthProvider gh is not ready: discovery failed: HTTP 503")),
    ("a provider that is not ready for no known reason",
     inp(provider=ProviderView(spec=None)),
     ("ProviderNotReady", "ExternalAuthProvider gh is not ready: unknown reason")),
    ("a provider that does not serve the namespace names its selector, and that nothing is sent",
     inp(provider=ProviderView(spec=TEAM_A), namespace_labels={"team": "b"}),
     ("ProviderNotAllowed", "ExternalAuthProvider gh serves only namespaces matching team=a; this namespace does "
      "not match, so its tokens are never sent")),
    ("a missing Secret is named", inp(secret_found=False, tokens=None),
     ("SecretNotFound", "Secret tok does not exist in this namespace")),
    ("a Secret without the provider label says which label to add",
     inp(secret_opted_in=False),
     ("SecretNotOptedIn", "Secret tok has not opted in to this provider: add the label externalauth.io/provider=gh "
      "to it (the operator uses only Secrets labelled for the link's provider)")),
    ("a Secret labelled for another provider says which, and which it should be",
     inp(secret_opted_in=False, secret_label="gitlab"),
     ("SecretNotOptedIn", "Secret tok is labelled externalauth.io/provider=gitlab, not externalauth.io/provider=gh: "
      "it has opted in to another provider")),
    ("a Secret without usable tokens says what is wrong with it",
     inp(tokens=None, secret_error="key access_token is missing"),
     ("SecretInvalid", "Secret tok: key access_token is missing")),
    ("a Secret without usable tokens, nothing more known", inp(tokens=None), ("SecretInvalid", "Secret tok: unusable")),
    ("a Secret that could not take refreshed tokens says why",
     inp(secret_unwritable="it would exceed 1 MiB"), ("SecretInvalid", "Secret tok: it would exceed 1 MiB")),
]


@pytest.mark.parametrize(("case", "expected"), [r[1:] for r in BLOCKED], ids=[r[0] for r in BLOCKED])
def test_what_a_blocked_link_says(case: LinkInput, expected: tuple[str, str]) -> None:
    """The only condition is Ready=False; the plan's why is the same sentence."""
    plan = decide(case)
    reason, message = expected
    assert ([("Ready", "False", reason, message)], message, Action.NONE) == (
        [(c.type, c.status, c.reason, c.message) for c in plan.conditions], plan.why, plan.action)


@pytest.mark.parametrize(("case", "fields"), [
    pytest.param(inp(provider=None), {"nextRefreshTime": None},
                 id="a blocked link plans no refresh: nextRefreshTime is cleared"),
    pytest.param(inp(provider=None, refresh_requested="r-9"), {"nextRefreshTime": None, "lastRefreshRequest": "r-9"},
                 id="a refresh request on a blocked link is acknowledged (it cannot be honoured)"),
])
def test_the_status_fields_of_a_blocked_link(case: LinkInput, fields: dict[str, Any]) -> None:
    assert fields == decide(case).fields


@pytest.mark.parametrize(("step", "case"), [
    pytest.param(deciding.provider_not_ready, inp(provider=None),
                 id="provider_not_ready passes a link whose provider does not exist (provider_missing says so)"),
    pytest.param(deciding.provider_not_allowed, inp(provider=None),
                 id="provider_not_allowed passes a link whose provider does not exist"),
    pytest.param(deciding.provider_not_allowed,
                 inp(spec=None, provider=ProviderView(spec=TEAM_A), namespace_labels={"team": "b"}),
                 id="provider_not_allowed passes a link whose spec did not parse (spec_invalid says so)"),
])
def test_a_guard_passes_what_an_earlier_guard_says(step: Any, case: LinkInput) -> None:
    """Each guard can be asked alone: it answers only its own question."""
    assert None is step(case)


# --- 2. Refreshable: refreshed now, later or never ------------------------------------------

Refreshable = tuple[str, LinkInput, tuple[str, str, str]]
REFRESHABLE: list[Refreshable] = [
    ("suspended: says so, and where", inp(spec=SUSPENDED),
     ("False", "Suspended", "refreshing is suspended (spec.suspend)")),
    ("no refresh token: validated, never refreshed", inp(tokens=tokens(refresh=None)),
     ("False", "NoRefreshToken", "the Secret has no refresh_token: the token is validated, never refreshed")),
    ("a dead grant: sign in again", inp(memory=LinkMemory(validation=validated(), dead_grant_fingerprint=DEAD)),
     ("False", "ReauthRequired", "the provider refused the refresh token: sign in again to write a new one")),
    ("a rejected OAuth client names the provider, and that it is retried",
     inp(provider=ProviderView(spec=PROVIDER, credentials_rejected_until=NOW + 30 * S)),
     ("False", "ProviderCredentialsRejected",
      "the provider rejected the OAuth client of ExternalAuthProvider gh; retrying with backoff")),
    ("a backoff says what failed",
     inp(memory=LinkMemory(validation=validated(), failure=Failure(
         RefreshableReason.RETRYING_TRANSIENT_ERROR, "the token endpoint answered HTTP 503", 2, NOW + 30 * S))),
     ("False", "RetryingTransientError", "the token endpoint answered HTTP 503")),
    ("another replica's claim held ten seconds is reported: which replica, and when its claim ends",
     inp(tokens=tokens(expires_in=60), claimed_by="operator-7f9c", claimed_until=NOW + 50 * S,
         claimed_since=NOW - 10 * S),
     ("False", "ClaimedElsewhere",
      "another replica (operator-7f9c) is refreshing the token; its claim ends at 2026-11-27T12:00:50Z")),
    ("another replica's young claim leaves Refreshable as the status has it",
     inp(tokens=tokens(expires_in=60), claimed_by="operator-7f9c", claimed_until=NOW + 58 * S,
         claimed_since=NOW - 2 * S, status={"conditions": [
             {"type": "Refreshable", "status": "False", "reason": "RetryingTransientError", "message": "HTTP 502"}]}),
     ("False", "RetryingTransientError", "HTTP 502")),
    ("not yet due: refreshed ahead of its expiry", inp(),
     ("True", "NotYetDue", "the token is refreshed ahead of its expiry")),
    ("refreshed here: the operator keeps it fresh", inp(memory=_refreshed_here()),
     ("True", "Refreshed", "the operator refreshed the token and keeps it fresh")),
    ("a refresh of another token here does not make this one Refreshed",
     inp(memory=_refreshed_here(fp=OTHER_FP)), ("True", "NotYetDue", "the token is refreshed ahead of its expiry")),
    ("refreshed here, refreshBefore beyond half its lifetime: says it is refreshed at half its lifetime",
     inp(tokens=tokens(expires_in=1200), memory=_refreshed_here()),
     ("True", "Refreshed", "the operator refreshed the token and keeps it fresh" + CLAMP)),
    ("refreshBefore beyond half the lifetime the status tells: says so too",
     inp(tokens=tokens(expires_in=1200), status={"lastRefreshTime": "2026-11-27T12:00:00Z"}),
     ("True", "NotYetDue", "the token is refreshed ahead of its expiry" + CLAMP)),
    ("a Refreshable=True the status has (another replica's Refreshed) is kept",
     inp(status={"conditions": [{"type": "Refreshable", "status": "True", "reason": "Refreshed", "message": "kept"}]}),
     ("True", "Refreshed", "kept")),
    ("a Refreshable=True the status has without reason or message: NotYetDue, no message",
     inp(status={"conditions": [{"type": "Refreshable", "status": "True"}]}), ("True", "NotYetDue", "")),
]


@pytest.mark.parametrize(("case", "expected"), [r[1:] for r in REFRESHABLE], ids=[r[0] for r in REFRESHABLE])
def test_what_refreshable_says(case: LinkInput, expected: tuple[str, str, str]) -> None:
    c = next(c for c in decide(case).conditions if c.type == "Refreshable")
    assert expected == (c.status, c.reason, c.message)


# --- 3. Ready ---------------------------------------------------------------------------------

Ready = tuple[str, LinkInput, tuple[str, str, str]]
READY: list[Ready] = [
    ("a token that could not be stored says why, and to sign in again",
     inp(memory=LinkMemory(validation=validated(), dead_grant_fingerprint=DEAD, lost="the Secret was deleted")),
     ("False", "SecretInvalid", "a refreshed token could not be stored (the Secret was deleted): sign in again")),
    ("a dead grant: sign in again", inp(memory=LinkMemory(validation=validated(), dead_grant_fingerprint=DEAD)),
     ("False", "ReauthRequired", "the provider refused the refresh token: sign in again")),
    ("an expired token says so", inp(tokens=tokens(expires_in=-5, refresh=None)),
     ("False", "TokenExpired", "the access token in the Secret has expired")),
    ("a token the provider rejected says so",
     inp(memory=LinkMemory(validation=validated(reason=ValidatedReason.INVALID))),
     ("False", "TokenRejected", "the provider rejected the access token")),
    ("a current token, nothing else worth knowing", inp(),
     ("True", "TokenCurrent", "the Secret holds a current access token")),
    ("a current token without output format keys says why",
     inp(format_problem="the provider gave no account"),
     ("True", "TokenCurrent", "the Secret holds a current access token; no output format keys: the provider gave "
      "no account")),
    ("a current token from a provider whose clock is off says so",
     inp(provider=ProviderView(spec=PROVIDER, clock_skew_message="the provider's clock is about 5 minutes ahead")),
     ("True", "TokenCurrent", "the Secret holds a current access token; the provider's clock is about 5 minutes "
      "ahead")),
]


@pytest.mark.parametrize(("case", "expected"), [r[1:] for r in READY], ids=[r[0] for r in READY])
def test_what_ready_says(case: LinkInput, expected: tuple[str, str, str]) -> None:
    plan = decide(case)
    c = plan.conditions[0]
    assert (expected, expected[0] == "True") == ((c.status, c.reason, c.message), plan.ready)


# --- 4. why, and the flags the engine reads ---------------------------------------------------

Why = tuple[str, LinkInput, Action, str, bool]
WHY: list[Why] = [
    ("a due token: refreshed, not as a request", inp(tokens=tokens(expires_in=60)), Action.REFRESH,
     "the token is due for refresh", False),
    ("no expiry: refreshed to learn it", inp(tokens=tokens(expires_in=None)), Action.REFRESH,
     "no expiry known: refresh to learn it", False),
    ("a request: refreshed, and answers it", inp(refresh_requested="r-1"), Action.REFRESH,
     "refresh requested by annotation", True),
    ("a failure whose backoff passed: retried",
     inp(memory=LinkMemory(validation=validated(), failure=Failure(
         RefreshableReason.RETRYING_TRANSIENT_ERROR, "x", 1, NOW - S))), Action.REFRESH,
     "retrying after a failed refresh", False),
    ("output keys that do not match: rewritten", inp(formats_stale=True), Action.WRITE_FORMATS,
     "the output format keys do not match the token", False),
    ("a token never validated: validated", inp(memory=LinkMemory()), Action.VALIDATE,
     "the token is due for validation", False),
    ("nothing to do", inp(), Action.NONE, "nothing to do", False),
]


@pytest.mark.parametrize(("case", "action", "why", "requested"), [r[1:] for r in WHY], ids=[r[0] for r in WHY])
def test_why_a_plan_acts(case: LinkInput, action: Action, why: str, requested: bool) -> None:
    plan = decide(case)
    assert (action, why, requested) == (plan.action, plan.why, plan.requested)


@pytest.mark.parametrize(("case", "fields"), [
    pytest.param(inp(), {"nextRefreshTime": "2026-11-27T19:45:00Z"}, id="the due time is shown as nextRefreshTime"),
    pytest.param(inp(spec=SUSPENDED, refresh_requested="r-5"), {"nextRefreshTime": None, "lastRefreshRequest": "r-5"},
                 id="a request a suspended link cannot honour is acknowledged"),
    pytest.param(inp(tokens=tokens(expires_in=60), claimed_by="o", claimed_until=NOW + 58 * S,
                     claimed_since=NOW - 2 * S, status={"nextRefreshTime": "2026-11-27T12:00:30Z"}),
                 {"nextRefreshTime": "2026-11-27T12:00:30Z"},
                 id="another replica's young claim: nextRefreshTime stays as the status has it"),
    pytest.param(inp(tokens=tokens(expires_in=60), claimed_by="o", claimed_until=NOW + 58 * S,
                     claimed_since=NOW - 2 * S, status={"nextRefreshTime": 12345}),
                 {"nextRefreshTime": None}, id="... unless what the status has is not a time"),
    pytest.param(inp(spec=SUSPENDED, refresh_requested="r-5", memory=LinkMemory()),
                 {"lastRefreshRequest": None}, id="... once nothing else is to be done (here: a validation)"),
    pytest.param(inp(tokens=dataclasses.replace(tokens(), refresh_token_expiry=NOW + 90 * 24 * H)),
                 {"refreshTokenExpiresAt": "2027-02-25T12:00:00Z"}, id="the refresh token's expiry is shown"),
])
def test_the_fields_a_decision_plans(case: LinkInput, fields: dict[str, Any]) -> None:
    got = decide(case).fields
    assert fields == {k: got.get(k) for k in fields}


@pytest.mark.parametrize(("memory", "hold"), [
    pytest.param(LinkMemory(claim_seen=OTHER_FP, seen=(FP, NOW - 29 * S, True)), True,
                 id="a token another replica just refreshed: its status is waited for"),
    pytest.param(LinkMemory(claim_seen=OTHER_FP, seen=(FP, NOW - 30 * S, True)), False,
                 id="at the end of the 30 s grace the status is written"),
])
def test_the_status_of_another_replicas_refresh_is_waited_for_thirty_seconds(memory: LinkMemory, hold: bool) -> None:
    """Validation off, so nothing else is done meanwhile."""
    plan = decide(inp(spec=NO_VALIDATION, memory=memory))
    assert (Action.NONE, hold) == (plan.action, plan.hold_status)


# --- 5. when a validation is due ---------------------------------------------------------------

def _verdict(at: dt.datetime, *, fp: str = FP, retry_at: dt.datetime | None = None) -> LinkMemory:
    return LinkMemory(validation=Validation(reason=ValidatedReason.VALID, message="m", at=at, token_fingerprint=fp,
                                            retry_at=retry_at))


ValidationRow = tuple[str, LinkInput, tuple[bool, "dt.datetime | None"]]
VALIDATION_DUE: list[ValidationRow] = [
    ("validated 59 minutes ago: due in a minute", inp(memory=_verdict(NOW - 59 * 60 * S)), (False, NOW + 60 * S)),
    ("validated exactly an interval ago: due now", inp(memory=_verdict(NOW - H)), (True, NOW)),
    ("no verdict (rate-limited): due when the provider said, not an interval later",
     inp(memory=_verdict(NOW, retry_at=NOW + 5 * 60 * S)), (False, NOW + 5 * 60 * S)),
    ("restarted: the status' last validation counts (an operator that published no digest)",
     inp(memory=LinkMemory(), status={"lastValidationTime": "2026-11-27T11:50:00Z"}), (False, NOW + 50 * 60 * S)),
    ("restarted: the status' last validation exactly an interval ago: due now",
     inp(memory=LinkMemory(), status={"lastValidationTime": "2026-11-27T11:00:00Z"}), (True, NOW)),
    ("restarted: a last validation of another token (the status' digest is not this token's) does not count",
     inp(memory=LinkMemory(), token_digest="d-this",
         status={"lastValidationTime": "2026-11-27T11:50:00Z", "validatedTokenDigest": "d-other"}), (True, None)),
    ("the status vouching for this token: its time counts",
     inp(memory=LinkMemory(), token_digest="d-this",
         status={"lastValidationTime": "2026-11-27T11:50:00Z", "validatedTokenDigest": "d-this"}),
     (False, NOW + 50 * 60 * S)),
    ("a verdict here on an older token and a status time without a digest (not about this token): due now",
     inp(memory=_verdict(NOW - 10 * 60 * S, fp=OTHER_FP), status={"lastValidationTime": "2026-11-27T11:50:00Z"}),
     (True, None)),
    ("a token another writer stored, seen 29 s ago: due after the 30 s grace",
     inp(memory=LinkMemory(seen=(FP, NOW - 29 * S, True))), (False, NOW + S)),
    ("a token another writer stored, seen exactly 30 s ago: due now",
     inp(memory=LinkMemory(seen=(FP, NOW - 30 * S, True))), (True, NOW)),
]


@pytest.mark.parametrize(("case", "expected"), [r[1:] for r in VALIDATION_DUE], ids=[r[0] for r in VALIDATION_DUE])
def test_when_a_validation_is_due(case: LinkInput, expected: tuple[bool, dt.datetime | None]) -> None:
    f = deciding.facts_of(case)
    assert expected == (f.validation_due, f.validation_at)


def test_a_refresh_here_of_an_older_token_does_not_date_this_one() -> None:
    """The issue time (it bounds the refresh at half the lifetime) then comes from the status."""
    f = deciding.facts_of(inp(memory=_refreshed_here(at=NOW - 7 * H, fp=OTHER_FP),
                              status={"lastRefreshTime": "2026-11-27T11:00:00Z"}))
    assert NOW - H == f.issued


def test_the_rendered_status() -> None:
    """Fields, the generation observed, and every condition with it."""
    got = deciding.render_status(decide(inp(tokens=tokens(expires_in=3600, refresh=None))),
                                 existing={"account": "octo", "conditions": []}, now=NOW, generation=3)
    stamp = {"observedGeneration": 3, "lastTransitionTime": "2026-11-27T12:00:00Z"}
    assert {
        "account": "octo", "expiresAt": "2026-11-27T13:00:00Z", "lastValidationTime": "2026-11-27T12:00:00Z",
        "observedGeneration": 3,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "TokenCurrent",
             "message": "the Secret holds a current access token", **stamp},
            {"type": "Refreshable", "status": "False", "reason": "NoRefreshToken",
             "message": "the Secret has no refresh_token: the token is validated, never refreshed", **stamp},
            {"type": "Validated", "status": "True", "reason": "Valid", "message": "m", **stamp},
        ],
    } == got
