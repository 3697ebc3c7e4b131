"""The error tree. Pure: no I/O.

Messages never carry a token, a response body or a header value: library
exceptions are translated at the I/O edge with ``raise ... from e``.
"""

from __future__ import annotations


class ExternalAuthError(Exception):
    """Base of every error the operator raises on purpose."""


class PermanentError(ExternalAuthError):
    """Retrying the same request will not help."""


class ForbiddenError(PermanentError):
    """The API server refused our credentials (401) or RBAC said no (403)."""


class UnauthorizedError(ForbiddenError):
    """The API server did not accept our credentials at all (401): they expired or were
    revoked; signing in again (a new kubeconfig token) is what helps."""


class RejectedError(PermanentError):
    """The API server refused the object itself (400, 413, 422: invalid, immutable, too
    large): the same write can never succeed."""


class TransientError(ExternalAuthError):
    """May succeed later; ``retry_after`` (seconds) is the earliest sensible retry, if known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConflictError(ExternalAuthError):
    """A compare-and-swap write lost: the object changed since it was read."""


class NotFoundError(ExternalAuthError):
    """The object does not exist (any more)."""


class InvalidInputError(PermanentError):
    """A spec, Secret or date the user wrote cannot be used as it is."""


class DiscoveryError(InvalidInputError, ValueError):
    """OIDC discovery from ``spec.issuerURL`` failed: the provider cannot be used as it is
    (Ready=False InvalidSpec, with this message). ``transient``: the issuer did not answer
    (or answered 429/5xx), so the same spec may work later; otherwise the document is
    missing or unusable, and the admin must fix the issuer URL. (Also a ValueError, so
    that code which maps a bad spec value by ValueError maps this one too.)"""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
