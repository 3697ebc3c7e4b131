"""The whole reading of a token endpoint's answer (model/tokens.read_token_answer): every
field, the error and its codes, and the notes that say what was not believed (they reach
the logs; never a value). One row per sentence; each row asserts the whole reading."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from externalauth.model.secure import SecretStr
from externalauth.model.tokens import MAX_LIFETIME, TokenSet, b64, read_token_answer, render_token_keys

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
OK = {"access_token": "at", "refresh_token": "rt", "token_type": "bearer"}


def whole(payload: Any) -> tuple[Any, ...]:
    """(access, refresh, type, expires in, refresh expires in, scope, error, salvaged
    refresh, notes, error codes)."""
    r = read_token_answer(payload, now=NOW)
    t = r.tokens
    tokens: tuple[Any, ...] = (None,) * 6 if t is None else (
        t.access_token.reveal(), t.refresh_token.reveal() if t.refresh_token else None, t.token_type,
        (t.expiry - NOW).total_seconds() if t.expiry else None,
        (t.refresh_token_expiry - NOW).total_seconds() if t.refresh_token_expiry else None, t.scope)
    return (*tokens, r.error, r.refresh_token.reveal() if r.refresh_token else None, r.notes, r.error_codes)


YEAR = MAX_LIFETIME.total_seconds()
ROWS: list[tuple[str, Any, tuple[Any, ...]]] = [
    ("a JSON value that is not an object is not a token", ["at"],
     (None,) * 6 + (None, None, ("the answer is not a JSON object",), ())),
    ("a plain answer: tokens, no notes", {**OK, "expires_in": 3600, "scope": "repo"},
     ("at", "rt", "bearer", 3600.0, None, "repo", None, "rt", (), ())),
    ("an empty error is no error", {**OK, "error": ""},
     ("at", "rt", "bearer", None, None, None, None, "rt", (), ())),
    ("an error that is not a string is unknown", {"error": 7},
     (None,) * 6 + ("unknown", None, (), ())),
    ("an access token that is not a string is noted, and there are no tokens", {"access_token": 5},
     (None,) * 6 + (None, None, ("access_token is not a non-empty string",), ())),
    ("a refresh token that is not a string is noted and ignored", {"access_token": "at", "refresh_token": 5},
     ("at", None, "bearer", None, None, None, None, None, ("refresh_token is not a non-empty string; ignored",),
      ())),
    ("an empty refresh token is simply absent", {"access_token": "at", "refresh_token": ""},
     ("at", None, "bearer", None, None, None, None, None, (), ())),
    ("a one-second lifetime is a lifetime", {**OK, "expires_in": 1},
     ("at", "rt", "bearer", 1.0, None, None, None, "rt", (), ())),
    ("a zero lifetime is unknown, noted", {**OK, "expires_in": 0},
     ("at", "rt", "bearer", None, None, None, None, "rt",
      ("expires_in is not a positive number of seconds; treated as unknown",), ())),
    ("a refresh token lifetime that is not a number is unknown, noted by its key",
     {**OK, "refresh_token_expires_in": "soon"},
     ("at", "rt", "bearer", None, None, None, None, "rt",
      ("refresh_token_expires_in is not a positive number of seconds; treated as unknown",), ())),
    ("a lifetime beyond a year is capped, noted", {**OK, "refresh_token_expires_in": 10**9},
     ("at", "rt", "bearer", None, YEAR, None, None, "rt", ("refresh_token_expires_in capped at a year",), ())),
    ("a huge integer lifetime is capped, not an overflow", {**OK, "expires_in": 10**400},
     ("at", "rt", "bearer", YEAR, None, None, None, "rt", ("expires_in capped at a year",), ())),
    ("a huge negative integer lifetime is unknown", {**OK, "expires_in": -(10**400)},
     ("at", "rt", "bearer", None, None, None, None, "rt",
      ("expires_in is not a positive number of seconds; treated as unknown",), ())),
    ("a scope list is joined", {**OK, "scope": ["repo", "user"]},
     ("at", "rt", "bearer", None, None, "repo user", None, "rt", (), ())),
    ("a scope that is not a string is noted and ignored", {**OK, "scope": 5},
     ("at", "rt", "bearer", None, None, None, None, "rt", ("scope is not a string; ignored",), ())),
    ("a scope with control characters is noted and ignored", {**OK, "scope": "repo\nuser"},
     ("at", "rt", "bearer", None, None, None, None, "rt", ("scope contains control characters; ignored",), ())),
    ("an odd token type becomes bearer, noted", {**OK, "token_type": "a b"},
     ("at", "rt", "bearer", None, None, None, None, "rt", ("token_type is not a token type name; bearer assumed",),
      ())),
    ("an error answer salvages its refresh token and reads Entra's codes",
     {"error": "invalid_grant", "refresh_token": "rt2", "error_codes": [70008, -1, 10**9, True, 999_999_999]},
     (None,) * 6 + ("invalid_grant", "rt2", (), (70008, 999_999_999))),
    ("without usable codes, the AADSTS number opening the description is the code",
     {"error": "invalid_grant", "error_codes": ["x"], "error_description": "AADSTS50173: the grant expired"},
     (None,) * 6 + ("invalid_grant", None, (), (50173,))),
    ("error code 0 is a code", {"error": "invalid_grant", "error_codes": [0]},
     (None,) * 6 + ("invalid_grant", None, (), (0,))),
    ("a lifetime of exactly a year is not capped", {**OK, "expires_in": YEAR},
     ("at", "rt", "bearer", YEAR, None, None, None, "rt", (), ())),
    ("a numeric string of 64 characters is read", {**OK, "expires_in": "6" + "0" * 63},
     ("at", "rt", "bearer", YEAR, None, None, None, "rt", ("expires_in capped at a year",), ())),
    ("a numeric string of 65 characters is not a number", {**OK, "expires_in": "6" + "0" * 64},
     ("at", "rt", "bearer", None, None, None, None, "rt",
      ("expires_in is not a positive number of seconds; treated as unknown",), ())),
    ("an answer with tokens and an error keeps both, and the error's codes",
     {**OK, "error": "invalid_grant", "error_codes": [70008]},
     ("at", "rt", "bearer", None, None, None, "invalid_grant", "rt", (), (70008,))),
    ("codes of an answer without an error are not read", {**OK, "error_codes": [70008]},
     ("at", "rt", "bearer", None, None, None, None, "rt", (), ())),
]


@pytest.mark.parametrize(("payload", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_read_token_answer(payload: Any, expected: tuple[Any, ...]) -> None:
    assert expected == whole(payload)


def test_render_token_keys_writes_every_key_it_has_and_blanks_none() -> None:
    tokens = TokenSet(access_token=SecretStr("at"), refresh_token=SecretStr("rt"), token_type="bearer",
                      expiry=NOW, refresh_token_expiry=NOW + dt.timedelta(days=1), scope="repo")
    assert {"access_token": b64("at"), "token_type": b64("bearer"), "refresh_token": b64("rt"),
            "expiry": b64("2026-11-27T12:00:00Z"), "refresh_token_expiry": b64("2026-11-28T12:00:00Z"),
            "scope": b64("repo")} == render_token_keys(tokens)
    assert {"access_token": b64("at"), "token_type": b64("bearer")} == render_token_keys(
        TokenSet(access_token=SecretStr("at"), refresh_token=None))


def test_a_secret_without_token_type_is_bearer() -> None:
    from externalauth.model.tokens import parse_secret_data

    assert "bearer" == parse_secret_data({"access_token": b64("at")}).token_type


def test_b64_is_utf8() -> None:
    assert "dMO2a8OpbuKCrA==" == b64("tökén€")
