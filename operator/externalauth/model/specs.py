"""Typed views of ExternalAuthProvider and ExternalAuthLink specs. Pure.

Raw payloads are the ``*Body`` TypedDicts; the views are frozen dataclasses.
Parsing raises :class:`InvalidInputError` with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import urllib.parse
from collections.abc import Mapping
from typing import Any

from externalauth import providers
from externalauth.errors import InvalidInputError
from externalauth.model import formats
from externalauth.model.durations import parse_duration
from externalauth.model.formats import OutputFormat
from externalauth.model.secure import SecretStr
from externalauth.model.selectors import LabelSelector, parse_selector

DEFAULT_REFRESH_BEFORE = dt.timedelta(minutes=15)
DEFAULT_MAX_CONCURRENT = 10


@dataclasses.dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    name: str
    type: providers.ProviderType
    client_id: str
    client_secret_ref: SecretRef | None
    token_url: str
    validate_url: str | None
    device_url: str | None
    scopes: tuple[str, ...]
    ca_bundle: str | None
    max_concurrent: int
    host: str  # host[:port] git talks to, for output formats
    # OIDC issuer (spec.issuerURL): the endpoints the spec does not name come from its
    # discovery document, read by the client (oauth/discovering.py). Until then
    # ``token_url`` may be "" (see :attr:`needs_discovery`).
    issuer_url: str | None = None
    # Which URLs the discovery document supplies (the spec did not name them).
    discover_device: bool = False
    discover_validation: bool = False
    # RFC 7009 endpoint, or GitHub's grant API (``{client_id}`` filled in); None: the
    # provider has none (or spec.revocationURL is ""). ``discover_revocation``: the
    # discovery document supplies it (generic with an issuer, no revocationURL).
    revocation_url: str | None = None
    discover_revocation: bool = False
    # spec.namespaceSelector: the namespaces whose links may use this provider (None: all).
    namespace_selector: LabelSelector | None = None

    def allows(self, namespace_labels: Mapping[str, str] | None) -> bool:
        """May a link in a namespace with these labels use this provider? (None: the
        namespace is not known yet, which only a provider without a selector allows.)"""
        if self.namespace_selector is None:
            return True
        return namespace_labels is not None and self.namespace_selector.matches(namespace_labels)

    @property
    def quirks(self) -> providers.Quirks:
        return providers.quirks(self.type)

    @property
    def needs_discovery(self) -> bool:
        """The issuer's discovery document must be read before the spec can be used."""
        return self.issuer_url is not None and (
            not self.token_url or self.discover_device or self.discover_validation)


@dataclasses.dataclass(frozen=True, slots=True)  # one per cached link (Caches.link_spec)
class LinkSpec:
    provider_name: str
    secret_name: str
    refresh_before: dt.timedelta
    validate: bool
    suspend: bool
    output_formats: tuple[OutputFormat, ...]
    revoke_on_delete: bool = False


def https_url(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"spec.{field} must be a URL")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme != "https":
        raise InvalidInputError(f"spec.{field} must be an https:// URL (tokens travel only over TLS)")
    if not parsed.hostname:
        raise InvalidInputError(f"spec.{field} has no host")
    return value


def parse_provider(name: str, spec: Mapping[str, Any] | None) -> ProviderSpec:
    spec = spec or {}
    try:
        kind = providers.ProviderType(spec.get("type", "generic"))
    except ValueError:
        raise InvalidInputError(f"spec.type {str(spec.get('type'))[:40]!r} is not supported") from None
    client_id = spec.get("clientID")
    if not isinstance(client_id, str) or not client_id:
        raise InvalidInputError("spec.clientID is required")
    ref = spec.get("clientSecretRef")
    secret_ref = None
    if ref is not None:
        if not isinstance(ref, Mapping) or not all(
            isinstance(ref.get(k), str) and ref.get(k) for k in ("namespace", "name", "key")
        ):
            raise InvalidInputError("spec.clientSecretRef needs namespace, name and key")
        secret_ref = SecretRef(ref["namespace"], ref["name"], ref["key"])
    base = spec.get("baseURL")
    if base is not None:
        base = https_url("baseURL", base)
        if providers.quirks(kind).base_url_needs_path and "tokenURL" not in spec \
                and not urllib.parse.urlsplit(base).path.strip("/"):
            raise InvalidInputError(
                f"spec.baseURL must name the tenant for type {kind}, e.g. "
                "https://login.microsoftonline.com/<tenant-id>")
    issuer = spec.get("issuerURL")
    if issuer is not None:
        issuer = https_url("issuerURL", issuer)
        if kind is not providers.ProviderType.GENERIC:
            raise InvalidInputError(f"spec.issuerURL is only for type generic, not {kind}")
    urls = providers.default_urls(kind, base)
    token_url = spec.get("tokenURL", urls["token"])
    if token_url is None and issuer is None:
        raise InvalidInputError(f"spec.tokenURL is required for type {kind} (or spec.issuerURL, to discover it)")
    token_url = https_url("tokenURL", token_url) if token_url is not None else ""
    validate_url = spec.get("validateURL", urls["validate"])
    validate_url = https_url("validateURL", validate_url) if validate_url else None
    device_url = spec.get("deviceAuthorizationURL", urls["device"])
    device_url = https_url("deviceAuthorizationURL", device_url) if device_url else None
    scopes = spec.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidInputError("spec.scopes must be a list of strings")
    revocation = spec.get("revocationURL", urls["revoke"])
    revocation_url = None
    if revocation is not None and revocation != "":  # "": the admin says there is none
        if isinstance(revocation, str):
            revocation = revocation.replace("{client_id}", urllib.parse.quote(client_id, safe=""))
        revocation_url = https_url("revocationURL", revocation)
    ca = spec.get("caBundle")
    if ca is not None and (not isinstance(ca, str) or "-----BEGIN CERTIFICATE-----" not in ca):
        raise InvalidInputError("spec.caBundle must hold PEM certificates")
    max_conc = spec.get("maxConcurrentRefreshes", DEFAULT_MAX_CONCURRENT)
    if not isinstance(max_conc, int) or isinstance(max_conc, bool) or max_conc < 1:
        raise InvalidInputError("spec.maxConcurrentRefreshes must be an integer >= 1")
    selector = spec.get("namespaceSelector")
    namespace_selector = parse_selector("spec.namespaceSelector", selector) if selector is not None else None
    host_url = urllib.parse.urlsplit(base or token_url or issuer or "")
    host = host_url.netloc.rsplit("@", 1)[-1]
    if kind is providers.ProviderType.GITHUB and host == "api.github.com":
        host = "github.com"
    return ProviderSpec(
        name=name,
        type=kind,
        client_id=client_id,
        client_secret_ref=secret_ref,
        token_url=token_url,
        validate_url=validate_url,
        device_url=device_url,
        scopes=tuple(scopes),
        ca_bundle=ca,
        max_concurrent=max_conc,
        host=host,
        issuer_url=issuer,
        discover_device=issuer is not None and "deviceAuthorizationURL" not in spec,
        discover_validation=issuer is not None and "validateURL" not in spec,
        revocation_url=revocation_url,
        discover_revocation=issuer is not None and "revocationURL" not in spec,
        namespace_selector=namespace_selector,
    )


def parse_link(spec: Mapping[str, Any] | None) -> LinkSpec:
    spec = spec or {}
    provider = spec.get("providerName")
    secret = spec.get("secretName")
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError("spec.providerName is required")
    if not isinstance(secret, str) or not secret:
        raise InvalidInputError("spec.secretName is required")
    before_text = spec.get("refreshBefore")
    try:
        before = DEFAULT_REFRESH_BEFORE if before_text is None else parse_duration(before_text)
    except InvalidInputError as e:
        raise InvalidInputError(f"spec.refreshBefore: {e}") from None
    formats_raw = spec.get("outputFormats") or []
    try:
        formats = tuple(dict.fromkeys(OutputFormat(f) for f in formats_raw))
    except (ValueError, TypeError):
        raise InvalidInputError("spec.outputFormats has an unknown format") from None
    return LinkSpec(
        provider_name=provider,
        secret_name=secret,
        refresh_before=before,
        validate=spec.get("validate", True) is not False,
        suspend=spec.get("suspend", False) is True,
        output_formats=formats,
        revoke_on_delete=spec.get("revokeOnDelete", False) is True,
    )


def render_formats(link: LinkSpec, provider: ProviderSpec, *, token: SecretStr,
                   account: str | None) -> formats.Rendering:
    """The outputFormats keys a link asks for, for ``token`` at its provider (None: remove
    that key, with the problem)."""
    return formats.render_all(list(link.output_formats), host=provider.host,
                              username=provider.quirks.git_username, token=token, account=account)
