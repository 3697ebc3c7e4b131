"""The one translation of API-server errors into :mod:`externalauth.errors`.

The one API client, :class:`~externalauth.kube.api.Kube` (the operator's, the CLI's, the
watches' and ``externalauth run``'s preflight), goes through here for every answer, every
watch ``ERROR`` event and every failure to get an answer, so they agree on what a status
code means:

=============================  ==========================================
401, 403                       :class:`ForbiddenError` (permanent)
404                            :class:`NotFoundError`
409                            :class:`ConflictError`
429, 5xx                       :class:`TransientError` with a capped ``Retry-After``
400, 413, 422                  :class:`RejectedError` (permanent: the object itself is refused)
any other 4xx                  :class:`PermanentError`
TLS failure                    :class:`PermanentError` naming TLS
a malformed URL or header      :class:`PermanentError`
no answer (refused, timeout)   :class:`TransientError`
=============================  ==========================================

Messages are one line: what we were doing, the status code, and at most the
API server's own ``Status`` message (truncated, control characters dropped),
never any other part of a body.

Pure: it reads an answer already received or an exception already raised.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import urllib3

from externalauth.errors import (
    ConflictError,
    ExternalAuthError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    RejectedError,
    TransientError,
    UnauthorizedError,
)

#: The longest wait a ``Retry-After`` may ask for, in seconds.
RETRY_AFTER_CAP = 3600.0
#: The longest Status message quoted in an error, in characters.
MESSAGE_LIMIT = 300

#: Exceptions that mean the request could never be sent as configured.
_MALFORMED = (
    urllib3.exceptions.LocationValueError,
    urllib3.exceptions.URLSchemeUnknown,
    urllib3.exceptions.InvalidHeader,
    ValueError,  # http.client: an invalid header value or URL
)


class Answer(Protocol):
    """The part of an answer (:class:`~externalauth.kube.connection.Response`) this module reads."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, at most :data:`RETRY_AFTER_CAP`.

    Anything longer (``inf`` and numbers too big for a float included) is the cap.
    None when absent, not a number (an HTTP date included: the API server sends
    seconds), NaN, or negative.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP)


def status_message(answer: Answer) -> str:
    """The ``message`` of a Kubernetes ``Status`` body on one printable line, truncated; else ''."""
    try:
        body = answer.json()
    except ValueError:  # json's JSONDecodeError included
        return ""
    if not isinstance(body, dict) or body.get("kind") != "Status":
        return ""
    return _printable(body.get("message"))


def error_for_answer(answer: Answer, *, what: str) -> ExternalAuthError | None:
    """The error an answer means, or None when it is a success (below 400)."""
    code = answer.status_code
    if code < 400:
        return None
    if code in (404, 409):
        return error_for_code(code, what=what, said="", retry_after=None)
    return error_for_code(code, what=what, said=status_message(answer),
                          retry_after=retry_after(answer.headers.get("Retry-After")))


def error_for_status(status: Any, *, what: str) -> ExternalAuthError:
    """The error a ``Status`` object means (a watch's ``ERROR`` event carries one)."""
    if not isinstance(status, Mapping):
        return PermanentError(f"{what}: the API server sent an error without a Status")
    code = status.get("code")
    if not isinstance(code, int) or code < 400:
        code = 500  # an error event always means a failure
    return error_for_code(code, what=what, said=_printable(status.get("message")), retry_after=None)


def _printable(message: Any) -> str:
    if not isinstance(message, str):
        return ""
    line = "".join(c for c in " ".join(message.split()) if c.isprintable())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def error_for_code(code: int, *, what: str, said: str, retry_after: float | None) -> ExternalAuthError:
    """The error an HTTP status code means; ``said`` the API server's own message, if any."""
    if code == 404:
        return NotFoundError(f"{what}: not found")
    if code == 409:
        return ConflictError(f"{what}: conflict")
    quoted = f": {said}" if said else ""
    if code in (401, 403):
        word = "unauthorized" if code == 401 else "forbidden"
        kind = UnauthorizedError if code == 401 else ForbiddenError
        return kind(f"{what}: {word} (HTTP {code}; check your kubeconfig and RBAC){quoted}")
    if code == 429 or code >= 500:
        return TransientError(f"{what}: the API server answered {code}{quoted}", retry_after=retry_after)
    if code in (400, 413, 422):
        return RejectedError(f"{what}: the API server answered {code}{quoted}")
    return PermanentError(f"{what}: the API server answered {code}{quoted}")


def error_for_exception(error: Exception, *, what: str, server: str) -> ExternalAuthError:
    """The error a failed attempt to reach ``server`` means (the exception's text is not quoted)."""
    if isinstance(error, urllib3.exceptions.SSLError | ssl.SSLError):
        return PermanentError(
            f"{what}: cannot reach the Kubernetes API server at {server}: TLS failed "
            "(certificate verification or handshake; check the cluster's CA certificate)"
        )
    if isinstance(error, _MALFORMED):
        return PermanentError(f"{what}: cannot send a request to the Kubernetes API server at {server} "
                              f"({type(error).__name__})")
    return TransientError(f"{what}: cannot reach the Kubernetes API server at {server} ({type(error).__name__})")


def json_object(answer: Answer, *, what: str) -> dict[str, Any]:
    """The JSON object of a successful answer; raises the translated error otherwise."""
    error = error_for_answer(answer, what=what)
    if error is not None:
        raise error
    try:
        body = answer.json()
    except ValueError as e:
        raise PermanentError(f"{what}: the API server answered something that is not JSON") from e
    if not isinstance(body, dict):
        raise PermanentError(f"{what}: the API server answered JSON that is not an object")
    return body
