"""Reading a token endpoint's answer without trusting it (contract §9.13): what is kept, what
is not believed, and that nothing raises. Pure table."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from externalauth.model.tokens import MAX_LIFETIME, read_token_answer

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
TOKENS = {"access_token": "gho_new", "refresh_token": "ghr_new", "token_type": "bearer"}


def view(payload: Any) -> tuple[Any, ...]:
    """(access token, refresh token, token type, lifetime, refresh token lifetime, scope)."""
    r = read_token_answer(payload, now=NOW)
    t = r.tokens
    if t is None:
        return (None, r.refresh_token.reveal() if r.refresh_token else None)
    return (t.access_token.reveal(), t.refresh_token.reveal() if t.refresh_token else None, t.token_type,
            t.expiry - NOW if t.expiry else None,
            t.refresh_token_expiry - NOW if t.refresh_token_expiry else None, t.scope)


@pytest.mark.parametrize(("payload", "expected"), [
    pytest.param({**TOKENS, "expires_in": 3600, "scope": "repo"},
                 ("gho_new", "ghr_new", "bearer", HOUR, None, "repo"), id="a normal answer"),
    pytest.param({**TOKENS, "expires_in": 1e308, "refresh_token_expires_in": 1e20},
                 ("gho_new", "ghr_new", "bearer", MAX_LIFETIME, MAX_LIFETIME, None),
                 id="expires_in 1e308 and refresh_token_expires_in 1e20 are capped at a year"),
    pytest.param({**TOKENS, "expires_in": 10**400}, ("gho_new", "ghr_new", "bearer", MAX_LIFETIME, None, None),
                 id="a 400-digit integer expires_in is capped at a year"),
    pytest.param({**TOKENS, "expires_in": "3600.5"},
                 ("gho_new", "ghr_new", "bearer", dt.timedelta(seconds=3600.5), None, None),
                 id="expires_in as a numeric string is read"),
    pytest.param({**TOKENS, "expires_in": -5}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a negative expires_in is unknown"),
    pytest.param({**TOKENS, "expires_in": 0}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a zero expires_in is unknown"),
    pytest.param({**TOKENS, "expires_in": float("nan")}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="expires_in NaN is unknown"),
    pytest.param({**TOKENS, "expires_in": float("inf")}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="expires_in Infinity is unknown"),
    pytest.param({**TOKENS, "expires_in": "soon"}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="expires_in that is a word is unknown"),
    pytest.param({**TOKENS, "expires_in": True}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="expires_in true is unknown"),
    pytest.param({**TOKENS, "expires_in": {"s": 1}}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="expires_in that is an object is unknown"),
    pytest.param({**TOKENS, "token_type": "mac\n"}, ("gho_new", "ghr_new", "mac", None, None, None),
                 id="a token_type with a trailing newline is stripped"),
    pytest.param({**TOKENS, "token_type": "be\x1barer"}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a token_type with an escape becomes bearer"),
    pytest.param({**TOKENS, "token_type": 7}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a token_type that is a number becomes bearer"),
    pytest.param({**TOKENS, "scope": ["repo", "gist"]}, ("gho_new", "ghr_new", "bearer", None, None, "repo gist"),
                 id="a scope list is joined"),
    pytest.param({**TOKENS, "scope": "repo\x1b[2J"}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a scope with an escape sequence is dropped"),
    pytest.param({**TOKENS, "scope": {"a": 1}}, ("gho_new", "ghr_new", "bearer", None, None, None),
                 id="a scope that is an object is dropped"),
    pytest.param({**TOKENS, "refresh_token": {"a": 1}}, ("gho_new", None, "bearer", None, None, None),
                 id="a refresh_token that is an object is not believed (the stored one is kept)"),
    pytest.param({"access_token": "gho_new"}, ("gho_new", None, "bearer", None, None, None),
                 id="no refresh_token keeps the stored one"),
    pytest.param({"access_token": "gho_new\nmachine x login y password z", "refresh_token": "ghr_new"},
                 ("gho_new\nmachine x login y password z", "ghr_new", "bearer", None, None, None),
                 id="an access token with a newline is kept, never lost (formats refuse it)"),
    pytest.param({**TOKENS, "access_token": {"a": 1}}, (None, "ghr_new"),
                 id="an access_token that is an object is no token, but the new refresh token is salvaged"),
    pytest.param({**TOKENS, "access_token": 12345}, (None, "ghr_new"),
                 id="an access_token that is a number is no token"),
    pytest.param({**TOKENS, "access_token": "   "}, (None, "ghr_new"), id="a blank access_token is no token"),
    pytest.param([TOKENS], (None, None), id="a JSON list body is no token"),
    pytest.param("gho_new", (None, None), id="a JSON string body is no token"),
    pytest.param(None, (None, None), id="a JSON null body is no token"),
])
def test_token_answers_are_read_defensively(payload: Any, expected: tuple[Any, ...]) -> None:
    assert expected == view(payload)


@pytest.mark.parametrize(("payload", "error"), [
    pytest.param({"error": "bad_refresh_token"}, "bad_refresh_token", id="an error code is carried"),
    pytest.param({"error": {"code": 1}}, "unknown", id="an error that is not a string is unknown"),
    pytest.param({**TOKENS, "error": None}, None, id="error null is no error"),
])
def test_error_codes_are_carried(payload: dict[str, Any], error: str | None) -> None:
    assert error == read_token_answer(payload, now=NOW).error


def test_notes_say_what_was_not_believed_without_values() -> None:
    notes = read_token_answer({**TOKENS, "expires_in": 1e308, "token_type": "zz\x1bCANARY"}, now=NOW).notes
    assert ("token_type is not a token type name; bearer assumed", "expires_in capped at a year") == notes


def test_json_that_python_reads_as_infinity_is_unknown() -> None:
    """json.loads accepts Infinity, NaN and 1e999: none of them becomes a lifetime or an error."""
    payload = json.loads('{"access_token": "a", "expires_in": 1e999, "refresh_token_expires_in": NaN}')
    tokens = read_token_answer(payload, now=NOW).tokens
    assert tokens is not None and (None, None) == (tokens.expiry, tokens.refresh_token_expiry)
