"""Revoking a grant at its provider (contract §2 ``revokeOnDelete``, §9.17). Pure: no I/O.

:func:`plan` says which requests revoke a link's grant for a provider type:

- RFC 7009 (GitLab, generic/OIDC servers): the refresh token first, with
  ``token_type_hint=refresh_token`` (§2.1: revoking it should also end the access tokens
  of the grant), then the access token, since a server may not do that;
- GitHub: one ``DELETE /applications/{client_id}/grant`` ("Delete an app authorization")
  with the app's Basic auth and the access token in a JSON body: the whole grant ends,
  every token of that user for that app;
- Bitbucket Cloud, Entra, Gitea (no per-token revocation): nothing is sent; the user is
  told where to revoke by hand.

:func:`classify` reads one answer: revoked, refused for good (say so, stop), or worth
another try (the provider is down or rate-limiting).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from externalauth.model.secure import SecretStr
from externalauth.policy import classifying
from externalauth.providers import Revocation


class Verdict(enum.StrEnum):
    REVOKED = "revoked"
    REFUSED = "refused"  # a definite no: not retried
    TRANSIENT = "transient"  # down, rate-limited, no answer: retried within the bound
    UNSUPPORTED = "unsupported"  # the provider type has no revocation endpoint


@dataclasses.dataclass(frozen=True)
class Request:
    """One revocation request. ``form``/``json`` values may be secrets; they are revealed
    only when the body is built, at the call."""

    what: str  # "refresh token", "access token", "grant": for messages
    method: str
    url: str
    form: Mapping[str, SecretStr | str] | None = None
    json: Mapping[str, SecretStr | str] | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    message: str
    retry_after: float | None = None


def plan(style: Revocation, url: str | None, *, refresh_token: SecretStr | None,
         access_token: SecretStr | None) -> list[Request]:
    """The requests that revoke a grant; empty when there is nothing to send (no URL, or
    no token)."""
    if url is None or style is Revocation.NONE:
        return []
    if style is Revocation.GITHUB_GRANT:
        if access_token is None:
            return []
        return [Request("grant", "DELETE", url, json={"access_token": access_token})]
    requests = []
    if refresh_token is not None:
        requests.append(Request("refresh token", "POST", url,
                                form={"token": refresh_token, "token_type_hint": "refresh_token"}))
    if access_token is not None:
        requests.append(Request("access token", "POST", url,
                                form={"token": access_token, "token_type_hint": "access_token"}))
    return requests


def classify(style: Revocation, *, status: int | None, error: str | None = None,
             headers: Mapping[str, str] | None = None, retry_after: float | None = None,
             what: str = "token") -> Outcome:
    """What one revocation answer means. ``status`` None: no answer (network, TLS,
    deadline). ``error``: the OAuth ``error`` code of a JSON answer, if any."""
    headers = headers or {}
    if status is None:
        return Outcome(Verdict.TRANSIENT, "the revocation endpoint did not answer")
    if style is Revocation.GITHUB_GRANT and status == 204:
        return Outcome(Verdict.REVOKED, "revoked the grant at the provider")
    if style is Revocation.GITHUB_GRANT and status == 404:
        # No such authorization for this app: the token was already revoked or expired.
        return Outcome(Verdict.REVOKED, "the grant was already gone at the provider (revoked or expired)")
    if style is Revocation.RFC7009 and status == 200:
        # §2.2: 200 also for a token the server did not know (already revoked or expired).
        return Outcome(Verdict.REVOKED, f"revoked the {what} at the provider")
    if 300 <= status < 400:
        return Outcome(Verdict.REFUSED, f"the revocation endpoint answered HTTP {status}, a redirect, which is "
                                        "never followed (check spec.revocationURL)")
    if status == 429 or status >= 500 or classifying.is_rate_limited(status, headers):
        return Outcome(Verdict.TRANSIENT, f"the revocation endpoint answered HTTP {status}",
                       retry_after=retry_after)
    if error == "unsupported_token_type":
        return Outcome(Verdict.REFUSED, f"the provider does not revoke this {what} (unsupported_token_type)")
    if error in ("invalid_client", "unauthorized_client") or status == 401:
        return Outcome(Verdict.REFUSED, "the provider rejected the OAuth client's credentials for revocation "
                                        "(check the provider's client secret)")
    code = f" ({classifying.safe_code(error)})" if error else ""
    return Outcome(Verdict.REFUSED, f"the revocation endpoint refused the request: HTTP {status}{code}")


def combine(outcomes: list[Outcome], whats: list[str] | None = None) -> Outcome:
    """One outcome for a revocation made of several requests: the first that did not
    revoke; else one that names everything revoked (``whats``, in order)."""
    for outcome in outcomes:
        if outcome.verdict is not Verdict.REVOKED:
            return outcome
    if whats and len(outcomes) > 1:
        return Outcome(Verdict.REVOKED, f"revoked the {' and the '.join(whats)} at the provider")
    return outcomes[-1]


def manual_step(manual: str) -> str:
    """What to do by hand when the provider could not revoke the grant."""
    return f"revoke the application's access by hand ({manual})"
