"""The exit codes of ``externalauth``, and what decides them. Pure.

Scripts branch on these (``externalauth refresh gh --wait || [ $? -eq 4 ] && externalauth
login gh``); docs/cli.md and every ``--help`` list them. 4 means "authentication required",
as it does for ``gh``:

====  =======================================================================
code  meaning
====  =======================================================================
0     done (for ``status LINK``: the link is Ready)
1     failed (the message says why; the cluster, the provider or the admin)
2     usage: the command line is wrong
4     sign in again: ``externalauth login`` fixes the link, or the API server
      refused the kubeconfig's credentials (401)
5     timed out (no approval in time, the operator did not act in time)
130   interrupted (Ctrl-C)
====  =======================================================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from externalauth.errors import ExternalAuthError, UnauthorizedError
from externalauth.model.reasons import ConditionType, ReadyReason, RefreshableReason, Status


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    SIGN_IN_AGAIN = 4
    TIMED_OUT = 5
    INTERRUPTED = 130


#: What ``--help`` prints under every command (the same table as the module docstring).
EPILOG = """exit codes:
  0    done (status LINK: the link is Ready)
  1    failed (the message says why)
  2    usage: the command line is wrong
  4    sign in again: `externalauth login` fixes the link (ReauthRequired,
       TokenRejected, SecretNotFound, SecretNotOptedIn, an expired token without
       a refresh token), or the API server refused your credentials (HTTP 401)
  5    timed out (no approval in time, or the operator did not act in time)
  130  interrupted"""


class CommandError(ExternalAuthError):
    """A command's failure with the exit code it stands for."""

    code = ExitCode.FAILED

    def __init__(self, message: str, *, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SignInAgain(CommandError):
    """Only a new sign-in (``externalauth login``) can fix this link."""

    code = ExitCode.SIGN_IN_AGAIN


class TimedOut(CommandError):
    """What the command waited for did not happen in time."""

    code = ExitCode.TIMED_OUT


def code_for(error: BaseException) -> ExitCode:
    """The exit code for an exception that ended a command."""
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, CommandError):
        return error.code
    if isinstance(error, UnauthorizedError):  # the kubeconfig's credentials expired or were revoked
        return ExitCode.SIGN_IN_AGAIN
    return ExitCode.FAILED


# Reasons only a sign-in fixes: the grant is dead or rejected, or the Secret that
# `login` writes (with its opt-in label) is missing or not opted in.
_SIGN_IN_READY = frozenset({
    ReadyReason.REAUTH_REQUIRED,
    ReadyReason.TOKEN_REJECTED,
    ReadyReason.SECRET_NOT_FOUND,
    ReadyReason.SECRET_NOT_OPTED_IN,
})
_SIGN_IN_REFRESHABLE = frozenset({RefreshableReason.REAUTH_REQUIRED})


def _condition(status: Mapping[str, object], kind: ConditionType) -> Mapping[str, object]:
    conditions = status.get("conditions")
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return {}


def needs_sign_in(status: Mapping[str, object]) -> bool:
    """Whether only a new sign-in can make (or keep) this link Ready.

    True for a dead or rejected grant (even while the current access token still
    works: it cannot be refreshed), a missing or not opted-in Secret, and an expired
    token that has no refresh token.
    """
    ready = _condition(status, ConditionType.READY)
    refreshable = _condition(status, ConditionType.REFRESHABLE)
    if refreshable.get("status") == Status.FALSE and refreshable.get("reason") in _SIGN_IN_REFRESHABLE:
        return True
    if ready.get("status") != Status.FALSE:
        return False
    if ready.get("reason") in _SIGN_IN_READY:
        return True
    return (ready.get("reason") == ReadyReason.TOKEN_EXPIRED
            and refreshable.get("reason") == RefreshableReason.NO_REFRESH_TOKEN)


def code_for_link(status: Mapping[str, object]) -> ExitCode:
    """``status LINK``'s exit code: 0 Ready (and refreshable, or static), 4 when only a sign-in
    helps, else 1 (not Ready, or not decided yet)."""
    if needs_sign_in(status):
        return ExitCode.SIGN_IN_AGAIN
    if _condition(status, ConditionType.READY).get("status") == Status.TRUE:
        return ExitCode.OK
    return ExitCode.FAILED
