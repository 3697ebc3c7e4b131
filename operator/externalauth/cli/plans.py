"""What ``externalauth login`` writes, decided without I/O. Pure.

Given the Secret as it is now (or ``None``) and the freshly obtained tokens:
create it, merge-patch it (keeping every other key, label and annotation), or
replace it (only with ``--force``, when its immutable ``type`` cannot hold a token).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from externalauth.errors import InvalidInputError
from externalauth.model import tokens as tokmod
from externalauth.model.names import LOGIN_ANNOTATION, PROVIDER_LABEL

API_VERSION = "externalauth.io/v1alpha1"


class Write(enum.StrEnum):
    CREATE = "create"
    PATCH = "patch"
    REPLACE = "replace"  # delete + create: the old type cannot hold a token


@dataclasses.dataclass(frozen=True)
class SecretPlan:
    write: Write
    body: dict[str, Any]  # full object (CREATE/REPLACE) or merge patch (PATCH)
    resource_version: str | None = None  # PATCH: the version it is based on (compare-and-swap)


def is_token_secret(secret: Mapping[str, Any]) -> bool:
    """A token Secret has an ``access_token`` key or our Secret type."""
    return secret.get("type") == tokmod.SECRET_TYPE or tokmod.ACCESS_TOKEN in (secret.get("data") or {})


def plan_secret(
    existing: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    provider: str,
    token_data: Mapping[str, str | None],
    force: bool,
    link: str | None = None,
) -> SecretPlan:
    """Decide the Secret write. ``token_data`` is base64 data from ``render_token_keys``
    (plus output-format keys; None: a key to remove).
    The Secret is labelled ``externalauth.io/provider=<provider>``: it opts in to that
    provider, and to no other (contract §3). A Secret it creates is annotated
    ``externalauth.io/created-by-login-for=<link>``: ``logout`` deletes only such a Secret.

    Token keys the new grant does not have (say, no ``refresh_token``) are removed,
    so that an old refresh token is never paired with a new access token.
    """
    if existing is None:
        return SecretPlan(Write.CREATE, {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": tokmod.SECRET_TYPE,
            "metadata": {"name": name, "namespace": namespace, "labels": {PROVIDER_LABEL: provider},
                         **({"annotations": {LOGIN_ANNOTATION: link}} if link else {})},
            "data": _present(token_data),
        })
    if not is_token_secret(existing) and not force:
        kind = existing.get("type") or "Opaque"
        raise InvalidInputError(
            f"Secret {namespace}/{name} exists and is not a token Secret (type {kind}, "
            f"no {tokmod.ACCESS_TOKEN} key); pass --force to write the token into it, "
            "or choose another name with --secret"
        )
    meta = existing.get("metadata") or {}
    if existing.get("type", "Opaque") not in tokmod.ACCEPTED_TYPES:
        # The type is immutable: recreate with everything else kept.
        labels = {**(meta.get("labels") or {}), PROVIDER_LABEL: provider}
        kept_meta = {"name": name, "namespace": namespace, "labels": labels}
        if meta.get("annotations"):
            kept_meta["annotations"] = dict(meta["annotations"])
        return SecretPlan(Write.REPLACE, {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": tokmod.SECRET_TYPE,
            "metadata": kept_meta,
            "data": _present({**(existing.get("data") or {}), **token_data}),
        })
    old = existing.get("data") or {}
    data: dict[str, str | None] = dict(token_data)
    for key in tokmod.TOKEN_KEYS:
        if key not in token_data and key in old:
            data[key] = None
    patch: dict[str, Any] = {
        "metadata": {"labels": {PROVIDER_LABEL: provider}},
        "data": data,
    }
    return SecretPlan(Write.PATCH, patch, resource_version=meta.get("resourceVersion") or None)


def _present(data: Mapping[str, str | None]) -> dict[str, str]:
    """A new object has no keys to remove."""
    return {k: v for k, v in data.items() if v is not None}


def _link_spec(*, provider: str, secret: str, formats: Sequence[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"providerName": provider, "secretName": secret}
    if formats:
        spec["outputFormats"] = list(formats)
    return spec


def link_body(*, namespace: str, name: str, provider: str, secret: str, formats: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ExternalAuthLink",
        "metadata": {"name": name, "namespace": namespace},
        "spec": _link_spec(provider=provider, secret=secret, formats=formats),
    }


def link_patch(*, provider: str, secret: str, formats: Sequence[str] = ()) -> dict[str, Any]:
    """Points an existing link at the provider and Secret (and sets ``formats``, which already
    include the link's own); its other fields stay."""
    return {"spec": _link_spec(provider=provider, secret=secret, formats=formats)}


def secret_to_delete(link: Mapping[str, Any], secret: Mapping[str, Any] | None, *,
                     keep: bool) -> tuple[bool, str]:
    """``logout``: whether the link's Secret goes with it, and what to say about it. Only a
    Secret that ``login`` created for this link (its annotation) and that is still opted in
    to the link's provider is deleted; a Secret a user made, or shares, is kept."""
    meta = link.get("metadata") or {}
    spec = link.get("spec") or {}
    name, link_name = str(spec.get("secretName") or ""), str(meta.get("name") or "")
    if not name or secret is None:
        return False, f"Secret {name or '(none)'} was not there"
    if keep:
        return False, f"Secret {name} kept (--keep-secret)"
    smeta = secret.get("metadata") or {}
    if (smeta.get("annotations") or {}).get(LOGIN_ANNOTATION) != link_name:
        return False, (f"Secret {name} kept: externalauth login did not create it for this link "
                       f"(no annotation {LOGIN_ANNOTATION}={link_name}); delete it yourself if it is not needed")
    if (smeta.get("labels") or {}).get(PROVIDER_LABEL) != spec.get("providerName"):
        return False, f"Secret {name} kept: it is no longer opted in to provider {spec.get('providerName')}"
    return True, f"Secret {name} deleted"
