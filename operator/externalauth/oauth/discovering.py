"""OIDC discovery (OpenID Connect Discovery 1.0 §4, RFC 8414 §3): the endpoints of an
issuer, read from ``<issuer>/.well-known/openid-configuration``. I/O (through the
caller's bounded, verified-TLS, no-redirect GET; :func:`read_document` is pure).

Used for a ``generic`` provider with ``spec.issuerURL``: the token endpoint, the RFC
8628 device endpoint and the userinfo endpoint (validation) come from the document
unless the spec names them. Failures raise :class:`~externalauth.errors.DiscoveryError`
with a message fit for the provider's condition (no body, no header values).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Mapping

from externalauth import transport
from externalauth.errors import DiscoveryError, InvalidInputError
from externalauth.model.specs import ProviderSpec, https_url

WELL_KNOWN = "/.well-known/openid-configuration"
#: Discovery is a small GET: it need not wait as long as a token call.
DISCOVERY_DEADLINE = 10.0

Get = Callable[[str], transport.Answer]  # GET url (Accept: application/json) -> Answer, or NoAnswer


@dataclasses.dataclass(frozen=True)
class Endpoints:
    token: str
    device: str | None = None
    userinfo: str | None = None
    revocation: str | None = None


def document_url(issuer: str) -> str:
    """Where the issuer's discovery document lives (§4.1: the issuer, without a trailing
    slash, plus the well-known path)."""
    return issuer.rstrip("/") + WELL_KNOWN


def _same_issuer(a: str, b: str) -> bool:
    """§4.3 wants them identical; a trailing slash is the one difference forgiven (Auth0's
    issuer ends with one, and admins type it both ways)."""
    return a.rstrip("/") == b.rstrip("/")


def _endpoint(document: Mapping[str, object], field: str, *, required: bool) -> str | None:
    value = document.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"the issuer's discovery document has no usable {field}")
    try:
        return https_url(field, value)
    except InvalidInputError:
        raise DiscoveryError(
            f"the issuer's discovery document names a {field} that is not an https:// URL with a host") from None


def read_document(payload: object, *, issuer: str) -> Endpoints:
    """The endpoints a decoded discovery document names. Raises DiscoveryError (permanent)
    when it is not a JSON object, names another issuer or lacks a usable token endpoint."""
    if not isinstance(payload, Mapping):
        raise DiscoveryError("the issuer's discovery document is not a JSON object")
    named = payload.get("issuer")
    if not isinstance(named, str) or not _same_issuer(named, issuer):
        raise DiscoveryError("the issuer's discovery document names another issuer than spec.issuerURL "
                             "(OpenID Connect Discovery §4.3)")
    token = _endpoint(payload, "token_endpoint", required=True)
    assert token is not None
    return Endpoints(
        token=token,
        device=_endpoint(payload, "device_authorization_endpoint", required=False),
        userinfo=_endpoint(payload, "userinfo_endpoint", required=False),
        revocation=_endpoint(payload, "revocation_endpoint", required=False),
    )


def discover(issuer: str, *, get: Get) -> Endpoints:
    """Fetch and read the issuer's discovery document."""
    url = document_url(issuer)
    host = _host(url)  # never the netloc: user info in spec.issuerURL must not reach status
    try:
        answer = get(url)
    except transport.NoAnswer as e:
        if e.kind is transport.NoAnswerKind.TLS:
            raise DiscoveryError(f"could not verify the TLS certificate of {host} (check spec.caBundle)",
                                 transient=True) from None
        raise DiscoveryError(f"the issuer {host} did not answer ({e.kind.value})", transient=True) from None
    if answer.status == 429 or answer.status >= 500:
        raise DiscoveryError(f"the issuer {host} answered HTTP {answer.status} for its discovery document",
                             transient=True)
    if answer.redirect:
        raise DiscoveryError(f"the issuer {host} answered HTTP {answer.status}, a redirect, which is never "
                             "followed (check spec.issuerURL)")
    if answer.status != 200:
        raise DiscoveryError(f"the issuer {host} has no discovery document at {WELL_KNOWN} "
                             f"(HTTP {answer.status}; check spec.issuerURL)")
    if answer.problem is not None:
        raise DiscoveryError(f"the issuer's discovery document could not be read ({answer.problem.value})",
                             transient=answer.problem is not transport.BodyProblem.TOO_LARGE)
    return read_document(transport.decode_answer(answer), issuer=issuer)


def _host(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


#: Discovery fields and the spec fields that name the same endpoint explicitly.
_SPEC_FIELDS = {"token_endpoint": "tokenURL", "device_authorization_endpoint": "deviceAuthorizationURL",
                "userinfo_endpoint": "validateURL", "revocation_endpoint": "revocationURL"}


def resolve(spec: ProviderSpec, endpoints: Endpoints) -> ProviderSpec:
    """The spec with the URLs it did not name taken from the discovery document. Each URL
    taken from the document must be on the issuer's host (the client secret and tokens go
    there): another host raises DiscoveryError (permanent) unless the spec names that
    endpoint itself."""
    assert spec.issuer_url is not None
    issuer_host = _host(spec.issuer_url)
    taken = {"token_endpoint": None if spec.token_url else endpoints.token,
             "device_authorization_endpoint": endpoints.device if spec.discover_device else None,
             "userinfo_endpoint": endpoints.userinfo if spec.discover_validation else None,
             "revocation_endpoint": endpoints.revocation if spec.discover_revocation else None}
    for field, url in taken.items():
        if url is not None and _host(url) != issuer_host:
            raise DiscoveryError(
                f"the issuer's discovery document names a {field} on another host ({_host(url)}) than the "
                f"issuer ({issuer_host}); name it in spec.{_SPEC_FIELDS[field]} to use it")
    return dataclasses.replace(
        spec,
        token_url=spec.token_url or endpoints.token,
        device_url=endpoints.device if spec.discover_device else spec.device_url,
        validate_url=endpoints.userinfo if spec.discover_validation else spec.validate_url,
        revocation_url=endpoints.revocation if spec.discover_revocation else spec.revocation_url,
        discover_device=False,
        discover_validation=False,
        discover_revocation=False,
    )
