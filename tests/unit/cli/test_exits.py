"""Exit codes a script can branch on: which failure means which code. Pure tables."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.cli import exits
from externalauth.cli.exits import ExitCode
from externalauth.errors import ForbiddenError, NotFoundError, PermanentError, TransientError, UnauthorizedError


def cond(kind: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}


def link_status(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"conditions": list(conditions)}


@pytest.mark.parametrize(("status", "expected"), [
    pytest.param(link_status(cond("Ready", "True", "TokenCurrent"), cond("Refreshable", "True", "Refreshed")),
                 ExitCode.OK, id="a ready and refreshable link is 0"),
    pytest.param(link_status(cond("Ready", "True", "TokenCurrent"),
                             cond("Refreshable", "False", "RetryingTransientError")),
                 ExitCode.OK, id="a ready link whose provider is briefly down is still 0"),
    pytest.param(link_status(cond("Ready", "True", "TokenCurrent"), cond("Refreshable", "False", "NoRefreshToken")),
                 ExitCode.OK, id="a static token that is current is 0"),
    pytest.param(link_status(cond("Ready", "True", "TokenCurrent"), cond("Refreshable", "False", "ReauthRequired")),
                 ExitCode.SIGN_IN_AGAIN, id="a current token whose grant is dead needs a sign-in before it expires"),
    pytest.param(link_status(cond("Ready", "False", "ReauthRequired")), ExitCode.SIGN_IN_AGAIN,
                 id="a dead grant needs a sign-in"),
    pytest.param(link_status(cond("Ready", "False", "TokenRejected")), ExitCode.SIGN_IN_AGAIN,
                 id="a token the provider rejects needs a sign-in"),
    pytest.param(link_status(cond("Ready", "False", "SecretNotOptedIn")), ExitCode.SIGN_IN_AGAIN,
                 id="a Secret without the opt-in label is fixed by login"),
    pytest.param(link_status(cond("Ready", "False", "SecretNotFound")), ExitCode.SIGN_IN_AGAIN,
                 id="a missing Secret is written by login"),
    pytest.param(link_status(cond("Ready", "False", "TokenExpired"), cond("Refreshable", "False", "NoRefreshToken")),
                 ExitCode.SIGN_IN_AGAIN, id="an expired token without a refresh token needs a sign-in"),
    pytest.param(link_status(cond("Ready", "False", "TokenExpired"),
                             cond("Refreshable", "False", "RetryingTransientError")),
                 ExitCode.FAILED, id="an expired token the operator is still retrying is a failure, not a sign-in"),
    pytest.param(link_status(cond("Ready", "False", "ProviderNotReady")), ExitCode.FAILED,
                 id="a provider problem is for the admin, not a sign-in"),
    pytest.param(link_status(cond("Ready", "True", "TokenCurrent"),
                             cond("Refreshable", "False", "ProviderCredentialsRejected")),
                 ExitCode.OK, id="a rejected client while the token is current is 0 (the admin is told elsewhere)"),
    pytest.param(link_status(cond("Ready", "False", "SecretInvalid")), ExitCode.FAILED,
                 id="an invalid Secret needs a human to look first"),
    pytest.param({}, ExitCode.FAILED, id="a link the operator has not looked at yet is not ready"),
    pytest.param({"conditions": "junk"}, ExitCode.FAILED, id="conditions that are not a list are not ready"),
])
def test_the_exit_code_of_a_link(status: dict[str, Any], expected: ExitCode) -> None:
    assert expected == exits.code_for_link(status)


@pytest.mark.parametrize(("error", "expected"), [
    pytest.param(exits.SignInAgain("x"), ExitCode.SIGN_IN_AGAIN, id="sign in again is 4"),
    pytest.param(UnauthorizedError("x"), ExitCode.SIGN_IN_AGAIN,
                 id="credentials the API server refuses (401) mean sign in again, as gh"),
    pytest.param(ForbiddenError("x"), ExitCode.FAILED, id="RBAC saying no (403) is a failure, not a sign-in"),
    pytest.param(exits.TimedOut("x"), ExitCode.TIMED_OUT, id="a timeout is 5"),
    pytest.param(exits.CommandError("x", code=ExitCode.USAGE), ExitCode.USAGE,
                 id="a usage mistake found after parsing is 2"),
    pytest.param(exits.CommandError("x"), ExitCode.FAILED, id="a command error is 1 by default"),
    pytest.param(NotFoundError("x"), ExitCode.FAILED, id="a missing object is 1"),
    pytest.param(TransientError("x"), ExitCode.FAILED, id="an unreachable cluster is 1"),
    pytest.param(PermanentError("x"), ExitCode.FAILED, id="any other failure is 1"),
    pytest.param(KeyboardInterrupt(), ExitCode.INTERRUPTED, id="Ctrl-C is 130"),
])
def test_the_exit_code_of_an_error(error: BaseException, expected: ExitCode) -> None:
    assert expected == exits.code_for(error)


def test_the_codes_are_the_contracts() -> None:
    """Scripts written for gh branch on 4 = authentication required; 5 = timed out."""
    assert {"OK": 0, "FAILED": 1, "USAGE": 2, "SIGN_IN_AGAIN": 4, "TIMED_OUT": 5, "INTERRUPTED": 130} == {
        c.name: int(c) for c in ExitCode}


def test_the_help_epilog_lists_every_exit_code() -> None:
    """Each code's number starts a line of the table --help prints."""
    listed = {int(line.split()[0]) for line in exits.EPILOG.splitlines()[1:] if line.strip()[:1].isdigit()}
    assert {int(c) for c in ExitCode} == listed
