"""The token-answer reader (oauth/exchanging.read_answer): an HTTP answer to an exchange
becomes the whole ExchangeResult (verdict, tokens, the refresh token salvaged, notes, the
provider's clock). One row per sentence; each row asserts the whole result."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_provider
from externalauth.oauth.exchanging import read_answer
from externalauth.transport import Answer

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SENT = SecretStr("rt-sent")
#: The RFC's meanings, refined by Entra's error codes.
ENTRA = parse_provider("p", {"type": "azure-devops-entra", "clientID": "c",
                             "baseURL": "https://login.microsoftonline.com/tenant"})
DATE_10S_AHEAD = "Fri, 27 Nov 2026 12:00:10 GMT"


def http(status: int, body: Any = None, **headers: str) -> Answer:
    raw = json.dumps(body).encode() if body is not None else b""
    return Answer(status=status, headers={"content-type": "application/json",
                                          **{k.replace("_", "-"): v for k, v in headers.items()}}, body=raw)


def whole(answer: Answer) -> tuple[Any, ...]:
    r = read_answer(answer, spec=ENTRA, consumed=SENT, arrived=NOW)
    t = r.tokens
    return (r.classified.verdict.value, r.classified.message, r.classified.answered, r.classified.retry_after,
            None if t is None else (t.access_token.reveal(), t.refresh_token.reveal() if t.refresh_token else None),
            r.refresh_token.reveal() if r.refresh_token else None, r.notes, r.clock_skew)


ROWS: list[tuple[str, Answer, tuple[Any, ...]]] = [
    ("new tokens, the provider's clock from its Date",
     http(200, {"access_token": "at", "refresh_token": "rt", "token_type": "bearer"}, date=DATE_10S_AHEAD),
     ("success", "refreshed", True, None, ("at", "rt"), "rt", (), 10.0)),
    ("no refresh token in the answer: the one sent stays valid (not rotated)",
     http(200, {"access_token": "at", "token_type": "bearer", "scope": 5}),
     ("success", "refreshed", True, None, ("at", "rt-sent"), None, ("scope is not a string; ignored",), None)),
    ("a 2xx without an access token salvages the refresh token it carries",
     http(200, {"refresh_token": "rt-new", "token_type": "bearer"}, date=DATE_10S_AHEAD),
     ("unusable_answer", "the token endpoint answered HTTP 200 without a usable access token; the refresh token "
      "may already be spent", True, None, None, "rt-new", (), 10.0)),
    ("an unreadable 2xx is unusable, with the reader's note",
     Answer(status=200, headers={"content-type": "application/json"}, body=b"<html>"),
     ("unusable_answer", "the token endpoint answered HTTP 200 with a body that could not be read (not a JSON "
      "object, too large or cut off); the refresh token may already be spent", True, None, None, None,
      ("the answer is not a JSON object",), None)),
    ("a refresh token in an error answer is not salvaged",
     http(400, {"error": "invalid_grant", "refresh_token": "rt-new"}),
     ("dead_grant", "the provider refused the refresh token (invalid_grant)", True, None, None, None, (), None)),
    ("a non-2xx carrying an access token is not a success",
     http(500, {"access_token": "at", "token_type": "bearer"}),
     ("transient", "the token endpoint answered HTTP 500", True, None, None, None, (), None)),
    ("Entra's error codes refine the error",
     http(400, {"error": "invalid_grant", "error_codes": [7000215]}),
     ("client_rejected", "the provider rejected the OAuth client credentials (invalid_grant 7000215)", True, None,
      None, None, (), None)),
    ("a rate-limited 403 with Retry-After is transient, with the wait",
     http(403, {"message": "slow down"}, retry_after="30", date=DATE_10S_AHEAD),
     ("transient", "the token endpoint is rate-limiting the operator (HTTP 403)", True, 30.0, None, None, (), 10.0)),
    ("a Retry-After date is measured from the answer's arrival when there is no Date",
     http(503, retry_after="Fri, 27 Nov 2026 12:01:00 GMT"),
     ("transient", "the token endpoint answered HTTP 503", True, 60.0, None, None,
      ("the answer is not a JSON object",), None)),
    ("a redirect is never followed and is transient (backoff, not its Retry-After), with the clock",
     Answer(status=302, headers={"location": "https://elsewhere.test/", "retry-after": "7",
                                 "date": DATE_10S_AHEAD}, body=None),
     ("transient", "the token endpoint answered HTTP 302, a redirect, which is never followed (check the "
      "ExternalAuthProvider's token URL)", True, None, None, None, (), 10.0)),
]


@pytest.mark.parametrize(("answer", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_read_answer(answer: Answer, expected: tuple[Any, ...]) -> None:
    assert expected == whole(answer)


def test_an_error_with_http_200_is_an_error_for_github() -> None:
    """GitHub sends errors with HTTP 200 (contract §9.4)."""
    github = parse_provider("gh", {"type": "github", "clientID": "c", "baseURL": "https://ghe.example"})
    r = read_answer(http(200, {"error": "bad_refresh_token"}), spec=github, consumed=SENT, arrived=NOW)
    assert ("dead_grant", None) == (r.classified.verdict.value, r.tokens)
