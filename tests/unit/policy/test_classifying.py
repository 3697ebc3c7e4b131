"""Hostile and odd provider answers (contract §9.10, §9.13, §9.14): pure classification rules."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from externalauth.policy.classifying import (
    TokenAnswer,
    TokenVerdict,
    ValidationVerdict,
    classify_token_answer,
    classify_validation,
    clock_skew,
    exhausted,
    is_rate_limited,
    rate_limit_remaining,
    rate_limit_retry_after,
    skew_message,
)
from externalauth.policy.timing import MAX_RETRY_AFTER

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
TEN_MINUTES = dt.timedelta(minutes=10)


def http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


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
    pytest.param({"x-ratelimit-reset": str(NOW.timestamp() - 100)}, 0.0,
                 id="an x-ratelimit-reset Unix time in the past is now"),
    pytest.param({"x-ratelimit-reset": "1000"}, 1000.0,
                 id="an x-ratelimit-reset too small to be a Unix time is seconds from now"),
    pytest.param({"ratelimit-reset": str(NOW.timestamp() + 90)}, 90.0,
                 id="GitLab's RateLimit-Reset is a Unix time ninety seconds ahead"),
    pytest.param({"x-ratelimit-reset": str((NOW - TEN_MINUTES).timestamp() + 60),
                  "date": http_date(NOW - TEN_MINUTES)}, 60.0,
                 id="a provider clock ten minutes behind: its Unix-time reset counts from its Date"),
    pytest.param({"x-ratelimit-reset": str((NOW + TEN_MINUTES).timestamp() + 60),
                  "date": http_date(NOW + TEN_MINUTES)}, 60.0,
                 id="a provider clock ten minutes ahead: its Unix-time reset counts from its Date"),
    pytest.param({"retry-after": http_date(NOW - TEN_MINUTES + dt.timedelta(seconds=120)),
                  "date": http_date(NOW - TEN_MINUTES)}, 120.0,
                 id="a Retry-After date counts from the provider's Date"),
    pytest.param({"x-ratelimit-reset": str(NOW.timestamp() + 60), "date": "yesterday"}, 60.0,
                 id="an unreadable Date falls back to the local clock"),
    pytest.param({"ratelimit": "limit=100, remaining=0, reset=50"}, 50.0,
                 id="the IETF draft's structured RateLimit header (reset=)"),
    pytest.param({"ratelimit": '"default";r=0;t=30'}, 30.0,
                 id="the IETF draft's structured RateLimit header (t=)"),
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


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"x-ratelimit-remaining": "4999"}, 4999.0, id="GitHub's x-ratelimit-remaining"),
    pytest.param({"ratelimit-remaining": "0"}, 0.0, id="GitLab's RateLimit-Remaining at zero"),
    pytest.param({"ratelimit": '"default";r=7;t=30'}, 7.0, id="the structured RateLimit header's r="),
    pytest.param({"x-ratelimit-remaining": "-1"}, None, id="a negative budget is not believed"),
    pytest.param({"x-ratelimit-remaining": "inf"}, None, id="an infinite budget is not believed"),
    pytest.param({"x-ratelimit-remaining": "lots"}, None, id="a word is not a budget"),
    pytest.param({}, None, id="no header, no budget"),
])
def test_the_remaining_budget_is_read_where_the_provider_tells_it(headers: dict[str, str],
                                                                   expected: float | None) -> None:
    assert expected == rate_limit_remaining(headers)


@pytest.mark.parametrize(("status", "headers", "expected"), [
    pytest.param(429, {}, True, id="429 is a rate limit"),
    pytest.param(403, {"x-ratelimit-remaining": "0"}, True, id="GitHub's primary limit: 403 with nothing left"),
    pytest.param(403, {"x-ratelimit-remaining": "0.0"}, True, id="a budget of 0.0 is nothing left"),
    pytest.param(403, {"retry-after": "60"}, True, id="GitHub's secondary limit: 403 with Retry-After"),
    pytest.param(403, {"x-ratelimit-remaining": "12"}, False, id="a 403 with budget left is a refusal"),
    pytest.param(401, {"retry-after": "60"}, False, id="a 401 is never a rate limit"),
])
def test_rate_limit_signs(status: int, headers: dict[str, str], expected: bool) -> None:
    assert expected == is_rate_limited(status, headers)


@pytest.mark.parametrize(("status", "headers", "expected"), [
    pytest.param(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800000000"}, True,
                 id="a 200 that spent the last request of the budget says to wait"),
    pytest.param(200, {"x-ratelimit-remaining": "0"}, False, id="without a reset there is nothing to wait for"),
    pytest.param(200, {"x-ratelimit-remaining": "1", "x-ratelimit-reset": "1800000000"}, False,
                 id="one request left is not spent"),
    pytest.param(401, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800000000"}, False,
                 id="only a success can say the budget is spent"),
])
def test_a_spent_budget_is_seen_before_the_next_request(status: int, headers: dict[str, str],
                                                         expected: bool) -> None:
    assert expected == exhausted(status, headers)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"date": http_date(NOW + TEN_MINUTES)}, 600.0, id="a provider ten minutes ahead"),
    pytest.param({"date": http_date(NOW - TEN_MINUTES)}, -600.0, id="a provider ten minutes behind"),
    pytest.param({"date": http_date(NOW)}, 0.0, id="clocks in sync"),
    pytest.param({"date": "Fri, 99 Zzz 99999"}, None, id="an unreadable Date measures nothing"),
    pytest.param({}, None, id="no Date measures nothing"),
])
def test_clock_skew_is_measured_from_the_date_header_at_arrival(headers: dict[str, str],
                                                                expected: float | None) -> None:
    assert expected == clock_skew(headers, arrived=NOW)


@pytest.mark.parametrize(("skew", "expected"), [
    pytest.param(None, None, id="no measure, nothing to say"),
    pytest.param(59.0, None, id="under a minute is not worth a word"),
    pytest.param(-59.0, None, id="under a minute behind is not worth a word"),
    pytest.param(600.4, "the provider's clock is about 10 minutes ahead of the operator's: refreshes are "
                        "still timed on the operator's clock, but check the time sync (NTP) of both",
                 id="ten minutes ahead, said in minutes"),
    pytest.param(-75.0, "the provider's clock is about 1 minute behind the operator's: refreshes are "
                        "still timed on the operator's clock, but check the time sync (NTP) of both",
                 id="a minute and a quarter behind, said as one minute"),
])
def test_a_clock_skew_is_said_in_a_stable_sentence(skew: float | None, expected: str | None) -> None:
    assert expected == skew_message(skew)


def test_a_token_endpoint_rate_limiting_with_403_is_transient_and_says_until_when() -> None:
    """GitHub-style 403 with rate-limit signs at the token endpoint is a wait, never a reason
    to make the user sign in again (it used to be PERMANENT, then ReauthRequired)."""
    classified = classify_token_answer(TokenAnswer(403, retry_after=60.0, rate_limited=True))
    assert (TokenVerdict.TRANSIENT, "the token endpoint is rate-limiting the operator (HTTP 403)", 60.0) == (
        classified.verdict, classified.message, classified.retry_after)


@pytest.mark.parametrize(("status", "headers", "body", "verdict", "message"), [
    pytest.param(403, {"www-authenticate": 'Bearer error="insufficient_scope", scope="read_user"'}, None,
                 ValidationVerdict.VALID, "the provider accepted the token (its scopes do not allow reading "
                 "the account: insufficient_scope)",
                 id="a 403 insufficient_scope (RFC 6750) proves the token is live"),
    pytest.param(403, {}, {"error": "insufficient_scope", "scope": "api read_user"},
                 ValidationVerdict.VALID, "the provider accepted the token (its scopes do not allow reading "
                 "the account: insufficient_scope)",
                 id="GitLab's 403 insufficient_scope body proves the token is live"),
    pytest.param(403, {}, {"message": "403 Forbidden"}, ValidationVerdict.INVALID,
                 "the provider rejected the token (HTTP 403)", id="a bare 403 is a rejection"),
])
def test_a_token_without_the_scope_to_read_the_account_is_still_valid(
        status: int, headers: dict[str, str], body: object, verdict: ValidationVerdict, message: str) -> None:
    outcome = classify_validation(status=status, headers=headers, body=body, account_fields=("username",), now=NOW)
    assert (verdict, message, None) == (outcome.verdict, outcome.message, outcome.account)


@pytest.mark.parametrize(("login", "account"), [
    pytest.param("alice", "alice", id="a plain name is kept"),
    pytest.param("ali\x1b[31mce", "ali[31mce", id="an escape sequence loses its ESC"),
    pytest.param("alice\u202egnp.exe", "alicegnp.exe", id="a right-to-left override is stripped"),
    pytest.param("\u2066bob\u2069\u200e", "bob", id="isolates and marks are stripped"),
    pytest.param("line\nbreak\x00", "linebreak", id="newlines and NUL are stripped"),
    pytest.param("Zoë 山田", "Zoë 山田", id="other Unicode is kept"),
    pytest.param("\u202e\x07", None, id="nothing left: no account"),
    pytest.param("x" * 300, "x" * 256, id="at most 256 characters"),
])
def test_the_account_loses_control_and_bidi_characters(login: str, account: str | None) -> None:
    """Security review finding 10: status.account is shown by kubectl's printer column."""
    outcome = classify_validation(status=200, headers={}, body={"login": login}, account_fields=("login",), now=NOW)
    assert account == outcome.account
