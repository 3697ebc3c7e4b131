"""Hostile and odd provider answers (contract §9.10, §9.13, §9.14): pure classification rules."""

from __future__ import annotations

import datetime as dt

import pytest

from externalauth.policy.classifying import (
    TokenAnswer,
    TokenVerdict,
    classify_token_answer,
    classify_validation,
    rate_limit_retry_after,
)
from externalauth.policy.timing import MAX_RETRY_AFTER

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"retry-after": "120"}, 120.0, id="Retry-After in seconds is kept"),
    pytest.param({"retry-after": "1e12"}, MAX_RETRY_AFTER, id="Retry-After 1e12 is capped at an hour"),
    pytest.param({"retry-after": "315360000"}, MAX_RETRY_AFTER, id="Retry-After of ten years is capped at an hour"),
    pytest.param({"retry-after": "inf"}, MAX_RETRY_AFTER, id="Retry-After inf is capped at an hour"),
    pytest.param({"retry-after": "1e999"}, MAX_RETRY_AFTER, id="Retry-After that overflows a float is capped"),
    pytest.param({"retry-after": "nan"}, None, id="Retry-After nan is ignored"),
    pytest.param({"retry-after": "-30"}, None, id="a negative Retry-After is ignored"),
    pytest.param({"retry-after": "soon"}, None, id="a word is ignored"),
    pytest.param({"retry-after": ""}, None, id="an empty Retry-After is ignored"),
    pytest.param({"retry-after": "Fri, 27 Nov 2026 12:02:00 GMT"}, 120.0, id="an HTTP-date two minutes ahead"),
    pytest.param({"retry-after": "Fri, 27 Nov 2026 11:00:00 GMT"}, 0.0, id="an HTTP-date in the past is now"),
    pytest.param({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_RETRY_AFTER,
                 id="an HTTP-date in year 9999 is capped"),
    pytest.param({"retry-after": "Fri, 99 Zzz 99999 99:99:99 GMT"}, None, id="HTTP-date garbage is ignored"),
    pytest.param({"retry-after": "Mon, 01 Jan 0001 00:00:00 +2400"}, None,
                 id="an HTTP-date with an impossible zone is ignored"),
    pytest.param({"x-ratelimit-reset": str(NOW.timestamp() + 60)}, 60.0, id="x-ratelimit-reset one minute ahead"),
    pytest.param({"x-ratelimit-reset": "1e12"}, MAX_RETRY_AFTER, id="x-ratelimit-reset far ahead is capped"),
    pytest.param({"x-ratelimit-reset": "inf"}, MAX_RETRY_AFTER, id="x-ratelimit-reset inf is capped"),
    pytest.param({"x-ratelimit-reset": "1000"}, 0.0, id="x-ratelimit-reset in the past is now"),
    pytest.param({"x-ratelimit-reset": "-5"}, None, id="a negative x-ratelimit-reset is ignored"),
    pytest.param({"x-ratelimit-reset": "nan"}, None, id="x-ratelimit-reset nan is ignored"),
    pytest.param({"ratelimit-reset": "30"}, 30.0, id="ratelimit-reset in seconds is kept"),
    pytest.param({"ratelimit-reset": "1e308"}, MAX_RETRY_AFTER, id="ratelimit-reset 1e308 is capped"),
    pytest.param({"ratelimit-reset": "-1"}, None, id="a negative ratelimit-reset is ignored"),
    pytest.param({"retry-after": "garbage", "ratelimit-reset": "30"}, 30.0,
                 id="an unreadable Retry-After falls back to the reset header"),
])
def test_rate_limit_waits_are_bounded(headers: dict[str, str], expected: float | None) -> None:
    assert expected == rate_limit_retry_after(headers, now=NOW)


@pytest.mark.parametrize("value", ["1e12", "inf", "nan", "-1", "Fri, 99 Zzz", "315360000", "1e999"])
def test_a_rate_limited_validation_never_waits_longer_than_an_hour(value: str) -> None:
    """The outcome carries a bounded wait (or none), never an exception."""
    outcome = classify_validation(status=429, headers={"retry-after": value}, body=None,
                                  account_fields=(), now=NOW)
    assert outcome.retry_after is None or 0 <= outcome.retry_after <= MAX_RETRY_AFTER


@pytest.mark.parametrize(("answer", "verdict", "message"), [
    pytest.param(TokenAnswer(307), TokenVerdict.TRANSIENT,
                 "the token endpoint answered HTTP 307, a redirect, which is never followed "
                 "(check the ExternalAuthProvider's token URL)",
                 id="a 307 redirect is a transient provider error, never followed"),
    pytest.param(TokenAnswer(308), TokenVerdict.TRANSIENT,
                 "the token endpoint answered HTTP 308, a redirect, which is never followed "
                 "(check the ExternalAuthProvider's token URL)",
                 id="a 308 redirect is a transient provider error, never followed"),
    pytest.param(TokenAnswer(200), TokenVerdict.UNUSABLE_ANSWER,
                 "the token endpoint answered HTTP 200 without a usable access token; "
                 "the refresh token may already be spent",
                 id="a 200 without an access token is unusable, not retried blindly"),
    pytest.param(TokenAnswer(200, unreadable=True), TokenVerdict.UNUSABLE_ANSWER,
                 "the token endpoint answered HTTP 200 with a body that could not be read "
                 "(not a JSON object, too large or cut off); the refresh token may already be spent",
                 id="a 200 whose body cannot be read is unusable, not retried blindly"),
    pytest.param(TokenAnswer(200, error="bad_refresh_token", unreadable=False), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (bad_refresh_token)",
                 id="an error in a 200 body still wins"),
])
def test_odd_token_answers_are_classified(answer: TokenAnswer, verdict: TokenVerdict, message: str) -> None:
    classified = classify_token_answer(answer)
    assert (verdict, message) == (classified.verdict, classified.message)
