"""``externalauth token``: which Secret's token is printed, and why not. Pure table."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from externalauth.cli import exits, token
from externalauth.cli.exits import ExitCode

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
LINK = {"metadata": {"namespace": "alice", "name": "gh"}, "spec": {"providerName": "github", "secretName": "gh-token"}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": "gh-token", "labels": {"externalauth.io/provider": "github"} if labels is None
                         else labels},
            "type": "externalauth.io/oauth2-token", "data": {k: b64(v) for k, v in data.items()}}


@pytest.mark.parametrize(("found", "expected"), [
    pytest.param(secret(access_token="gho_abc", expiry="2026-12-05T13:00:00Z"), token.Found("gho_abc", None),
                 id="an opted-in Secret's token is printed"),
    pytest.param(secret(access_token="gho_abc\n"), token.Found("gho_abc", None),
                 id="a trailing newline in the Secret is not part of the token"),
    pytest.param(secret(access_token="gho_abc", expiry="2026-12-05T11:00:00Z"),
                 token.Found("gho_abc", dt.datetime(2026, 12, 5, 11, 0, tzinfo=dt.UTC)),
                 id="an expired token is printed, and said to have expired"),
])
def test_the_token_printed(found: dict[str, Any], expected: token.Found) -> None:
    assert expected == token.access_token(LINK, found, now=NOW)


@pytest.mark.parametrize(("found", "message"), [
    pytest.param(None, "Secret gh-token does not exist", id="a missing Secret: sign in"),
    pytest.param(secret(labels={}, access_token="gho_abc"), "needs the label externalauth.io/provider=github",
                 id="a Secret without the opt-in label is not read"),
    pytest.param(secret(labels={"externalauth.io/provider": "gitlab"}, access_token="gho_abc"),
                 "not opted in to provider github", id="a Secret opted in to another provider is not read"),
    pytest.param(secret(refresh_token="r"), "access_token is missing", id="a Secret without an access token"),
    pytest.param(secret(access_token="a\x1bb"), "control characters",
                 id="a token with control characters is never printed"),
])
def test_no_token_is_printed_and_the_user_is_told_to_sign_in(found: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(exits.CommandError) as e:
        token.access_token(LINK, found, now=NOW)
    assert (ExitCode.SIGN_IN_AGAIN, True, True) == (e.value.code, message in str(e.value),
                                                   "externalauth login github --link gh" in str(e.value))
