"""What a user reads about a provider's answer (policy/classifying.py): the verdict and
the sentence of every kind of token and validation answer, with its key facts (the
HTTP status, the OAuth error code, the provider's own code, when to try again); and the
edges of the header arithmetic (exhausted budgets, reset thresholds, clock skew)."""

from __future__ import annotations

import datetime as dt

import pytest

from externalauth.policy.classifying import (
    Classified,
    TokenAnswer,
    TokenVerdict,
    ValidationOutcome,
    ValidationVerdict,
    classify_token_answer,
    classify_validation,
    clock_skew,
    exhausted,
    rate_limit_remaining,
    rate_limit_retry_after,
    skew_message,
)
from externalauth.providers import ProviderType, Quirks, quirks

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
ENTRA = quirks(ProviderType.AZURE_DEVOPS_ENTRA)
T = TokenVerdict

TOKEN_ANSWERS = [
    pytest.param(TokenAnswer(200, has_access_token=True), None, Classified(T.SUCCESS, "refreshed"),
                 id="a token: refreshed"),
    pytest.param(TokenAnswer(400, error="invalid_grant"), None,
                 Classified(T.DEAD_GRANT, "the provider refused the refresh token (invalid_grant)"),
                 id="invalid_grant: the provider refused the refresh token, naming the code"),
    pytest.param(TokenAnswer(400, error="invalid_grant", error_codes=(70008,)), ENTRA,
                 Classified(T.DEAD_GRANT, "the provider refused the refresh token (invalid_grant 70008)"),
                 id="Entra's code is named beside the OAuth error"),
    pytest.param(TokenAnswer(401, error="invalid_client"), None,
                 Classified(T.CLIENT_REJECTED, "the provider rejected the OAuth client credentials (invalid_client)"),
                 id="invalid_client: the OAuth client credentials were rejected, naming the code"),
    pytest.param(TokenAnswer(400, error="invalid_request", error_codes=(50196,), retry_after=30), ENTRA,
                 Classified(T.TRANSIENT, "the token endpoint answered error invalid_request 50196", 30),
                 id="Entra's request-loop code is transient, and keeps the provider's Retry-After"),
    pytest.param(TokenAnswer(400, error_codes=(70008,)), ENTRA,
                 Classified(T.PERMANENT, "the token endpoint answered HTTP 400"),
                 id="a provider code without an OAuth error refines nothing: the HTTP status decides"),
    pytest.param(TokenAnswer(None), None,
                 Classified(T.TRANSIENT, "the token endpoint did not answer", answered=False),
                 id="no answer: transient, and the answer may have been lost in flight"),
    pytest.param(TokenAnswer(300, has_access_token=True), None,
                 Classified(T.TRANSIENT, "the token endpoint answered HTTP 300, a redirect, which is never followed "
                            "(check the ExternalAuthProvider's token URL)"),
                 id="HTTP 300 is a redirect too, never followed, whatever the body"),
    pytest.param(TokenAnswer(307), None,
                 Classified(T.TRANSIENT, "the token endpoint answered HTTP 307, a redirect, which is never followed "
                            "(check the ExternalAuthProvider's token URL)"),
                 id="a redirect: never followed; check the token URL"),
    pytest.param(TokenAnswer(403, rate_limited=True, retry_after=90), None,
                 Classified(T.TRANSIENT, "the token endpoint is rate-limiting the operator (HTTP 403)", 90),
                 id="a rate-limited 403: transient, the wait carried"),
    pytest.param(TokenAnswer(429, retry_after=7), None,
                 Classified(T.TRANSIENT, "the token endpoint answered HTTP 429", 7), id="a 429: transient"),
    pytest.param(TokenAnswer(503, retry_after=5), None,
                 Classified(T.TRANSIENT, "the token endpoint answered HTTP 503", 5), id="a 5xx: transient"),
    pytest.param(TokenAnswer(400, error="temporarily_unavailable", retry_after=12), None,
                 Classified(T.TRANSIENT, "the token endpoint answered error temporarily_unavailable", 12),
                 id="an OAuth error that says try later: transient, naming the code"),
    pytest.param(TokenAnswer(503, error="<script>"), None,
                 Classified(T.TRANSIENT, "the token endpoint answered error unknown"),
                 id="an unknown code on a 5xx is not repeated"),
    pytest.param(TokenAnswer(400, error="invalid_scope"), None,
                 Classified(T.PERMANENT, "the token endpoint answered error invalid_scope"),
                 id="another OAuth error: permanent, naming the code"),
    pytest.param(TokenAnswer(401), None,
                 Classified(T.CLIENT_REJECTED, "the provider rejected the OAuth client credentials (HTTP 401)"),
                 id="a bare 401: the OAuth client credentials were rejected"),
    pytest.param(TokenAnswer(402), None, Classified(T.PERMANENT, "the token endpoint answered HTTP 402"),
                 id="a bare 402 is no client rejection: permanent"),
    pytest.param(TokenAnswer(404), None, Classified(T.PERMANENT, "the token endpoint answered HTTP 404"),
                 id="a 404: permanent, naming the status"),
    pytest.param(TokenAnswer(200), None,
                 Classified(T.UNUSABLE_ANSWER, "the token endpoint answered HTTP 200 without a usable access token; "
                            "the refresh token may already be spent"),
                 id="a 200 without a token: the refresh token may be spent"),
    pytest.param(TokenAnswer(201, unreadable=True), None,
                 Classified(T.UNUSABLE_ANSWER, "the token endpoint answered HTTP 201 with a body that could not be "
                            "read (not a JSON object, too large or cut off); the refresh token may already be spent"),
                 id="an unreadable 2xx: says so, and that the refresh token may be spent"),
]


@pytest.mark.parametrize(("answer", "kind", "expected"), TOKEN_ANSWERS)
def test_what_a_token_answer_means_and_says(answer: TokenAnswer, kind: Quirks | None, expected: Classified) -> None:
    assert expected == classify_token_answer(answer, quirks=kind)


V = ValidationVerdict
VALIDATIONS = [
    pytest.param(None, {}, frozenset(), ValidationOutcome(V.UNREACHABLE, "the validation endpoint did not answer"),
                 id="no answer: unreachable"),
    pytest.param(429, {"retry-after": "60"}, frozenset(),
                 ValidationOutcome(V.RATE_LIMITED, "the provider is rate-limiting validation (HTTP 429)",
                                   retry_after=60.0),
                 id="rate-limited: says so, with the wait"),
    pytest.param(203, {}, frozenset({203}),
                 ValidationOutcome(V.INVALID,
                                   "the provider answered HTTP 203, its answer to a token it does not accept"),
                 id="a provider's own not-signed-in answer: invalid, naming the status"),
    pytest.param(403, {"www-authenticate": 'Bearer error="insufficient_scope"'}, frozenset(),
                 ValidationOutcome(V.VALID, "the provider accepted the token (its scopes do not allow reading the "
                                   "account: insufficient_scope)"),
                 id="insufficient_scope: valid, the account unreadable"),
    pytest.param(401, {}, frozenset(), ValidationOutcome(V.INVALID, "the provider rejected the token (HTTP 401)"),
                 id="401: the token was rejected"),
    pytest.param(200, {}, frozenset(), ValidationOutcome(V.VALID, "the provider accepted the token", "octo"),
                 id="200: accepted, with the account"),
    pytest.param(300, {}, frozenset(), ValidationOutcome(V.UNREACHABLE, "the validation endpoint answered HTTP 300"),
                 id="a 300 is no verdict: unreachable, naming the status"),
    pytest.param(502, {}, frozenset(), ValidationOutcome(V.UNREACHABLE, "the validation endpoint answered HTTP 502"),
                 id="a 5xx is no verdict: unreachable, naming the status"),
]


@pytest.mark.parametrize(("status", "headers", "invalid", "expected"), VALIDATIONS)
def test_what_a_validation_answer_means_and_says(status: int | None, headers: dict[str, str],
                                                 invalid: frozenset[int], expected: ValidationOutcome) -> None:
    assert expected == classify_validation(status=status, headers=headers, body={"login": "octo"},
                                           account_fields=("login",), now=NOW, invalid_statuses=invalid)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"retry-after": "Fri, 27 Nov 2026 12:02:00 -0000"}, 120.0,
                 id="an HTTP-date in an unknown zone (-0000) is read as UTC"),
    pytest.param({"x-ratelimit-reset": "1000000000"}, 0.0,
                 id="a reset of exactly 1e9 is a Unix time (2001: long past), not 31 years from now"),
    pytest.param({"ratelimit": "reset=50," + " " * 1015}, 50.0, id="a structured header of 1024 characters is read"),
    pytest.param({"ratelimit": "reset=50," + " " * 1016}, None,
                 id="a structured header longer than 1024 characters is ignored"),
])
def test_rate_limit_retry_after_edges(headers: dict[str, str], expected: float | None) -> None:
    assert expected == rate_limit_retry_after(headers, now=NOW)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"ratelimit": "limit=100, remaining=5, reset=50"}, 5.0,
                 id="the structured header's remaining= (drafts 03 to 07)"),
    pytest.param({"ratelimit": '"default";r=4;t=30'}, 4.0, id="the structured header's r= (draft 08 on)"),
    pytest.param({"ratelimit": "remaining=" + "9" * 400}, None, id="a remaining too large for a number is ignored"),
    pytest.param({}, None, id="no header: not said"),
])
def test_rate_limit_remaining(headers: dict[str, str], expected: float | None) -> None:
    assert expected == rate_limit_remaining(headers)


@pytest.mark.parametrize(("status", "headers", "expected"), [
    pytest.param(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, True,
                 id="nothing left and GitHub's reset: exhausted"),
    pytest.param(200, {"ratelimit-remaining": "0", "ratelimit-reset": "30"}, True,
                 id="nothing left and GitLab's reset: exhausted"),
    pytest.param(200, {"x-ratelimit-remaining": "0", "retry-after": "30"}, True,
                 id="nothing left and a Retry-After: exhausted"),
    pytest.param(200, {"ratelimit": "remaining=0, reset=30"}, True,
                 id="nothing left in the structured header: exhausted"),
    pytest.param(200, {"x-ratelimit-remaining": "0"}, False, id="nothing left but no reset named: not exhausted"),
    pytest.param(200, {"x-ratelimit-remaining": "1", "x-ratelimit-reset": "1"}, False,
                 id="one request left: not exhausted"),
    pytest.param(300, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, False,
                 id="a 300 is no successful answer"),
])
def test_an_exhausted_budget(status: int, headers: dict[str, str], expected: bool) -> None:
    assert expected == exhausted(status, headers)


def test_clock_skew_is_measured_to_a_tenth_of_a_second() -> None:
    arrived = NOW + dt.timedelta(milliseconds=123)
    assert -0.1 == clock_skew({"date": "Fri, 27 Nov 2026 12:00:00 GMT"}, arrived=arrived)


@pytest.mark.parametrize(("skew", "expected"), [
    pytest.param(None, None, id="no skew known: nothing to say"),
    pytest.param(59.9, None, id="under a minute: nothing to say"),
    pytest.param(60.0, "the provider's clock is about 1 minute ahead of the operator's: refreshes are still timed "
                 "on the operator's clock, but check the time sync (NTP) of both", id="a minute ahead: said"),
    pytest.param(-90.0, "the provider's clock is about 2 minutes behind the operator's: refreshes are still timed "
                 "on the operator's clock, but check the time sync (NTP) of both",
                 id="a minute and a half behind: about 2 minutes"),
])
def test_a_clock_skew_in_words(skew: float | None, expected: str | None) -> None:
    assert expected == skew_message(skew)
