"""Raw Kubernetes objects as the API server sends them, and the few reads the engine
makes of them. Pure.

Raw payloads stay ``TypedDict``s (like kopf's ``RawBody``/``RawMeta``); the typed
views built on them live in :mod:`externalauth.model.specs` and
:mod:`externalauth.model.tokens`.
"""

from __future__ import annotations

from typing import Any, TypedDict

from externalauth.model.names import LinkKey


class RawMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    managedFields: list[Any]


class RawBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: dict[str, Any]
    status: dict[str, Any]
    data: dict[str, str]
    type: str
    immutable: bool


def key_of(body: RawBody) -> LinkKey:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def resource_version(body: RawBody | None) -> str | None:
    value = ((body or {}).get("metadata") or {}).get("resourceVersion")
    return value if isinstance(value, str) else None


def annotations_of(body: RawBody | None) -> dict[str, str]:
    return ((body or {}).get("metadata") or {}).get("annotations") or {}


def labels_of(body: RawBody | None) -> dict[str, str]:
    return ((body or {}).get("metadata") or {}).get("labels") or {}


def annotation(body: RawBody | None, name: str) -> str | None:
    value = annotations_of(body).get(name)
    return value if isinstance(value, str) else None


def newer(old: RawBody | None, new: RawBody) -> bool:
    """Is ``new`` at least as recent as ``old``? (resourceVersions are etcd revisions.)"""
    a, b = resource_version(old), resource_version(new)
    if old is None or a is None or b is None:
        return True
    try:
        return int(b) >= int(a)
    except ValueError:
        return True


def slim(body: RawBody) -> RawBody:
    """The object without what the engine never reads: managedFields are often the largest
    part of an object, and the caches hold 10,000s of links and Secrets."""
    meta = body.get("metadata")
    if meta is not None and "managedFields" in meta:
        trimmed: RawMeta = {k: v for k, v in meta.items() if k != "managedFields"}  # type: ignore[assignment]
        return {**body, "metadata": trimmed}
    return body
