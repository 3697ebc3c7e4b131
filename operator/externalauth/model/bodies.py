"""Raw Kubernetes objects as the API server sends them, and the few reads the engine
makes of them. Pure.

Raw payloads stay ``TypedDict``s (like kopf's ``RawBody``/``RawMeta``); the typed
views built on them live in :mod:`externalauth.model.specs` and
:mod:`externalauth.model.tokens`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any, TypedDict

from externalauth import PREFIX
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
    deletionTimestamp: str
    finalizers: list[str]


class RawBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: dict[str, Any]
    status: dict[str, Any]
    data: dict[str, str]
    type: str
    immutable: bool
    # Ours, set by slim_secret on a cached Secret (never sent by the API server):
    omittedBytes: int  # size of the data keys left out (key lengths plus decoded values)
    dataOmitted: bool  # the data was left out whole (no link reads this Secret)


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


#: The metadata the engine reads (with our own labels and annotations): the caches hold
#: 10,000s of links and Secrets, and managedFields alone are often the largest part of an
#: object; a kubectl-applied object also carries a copy of itself in an annotation.
#: ``deletionTimestamp`` and ``finalizers``: revocation on deletion (a merge patch of
#: finalizers replaces the whole list, so all of them are kept; rarely more than one).
KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "deletionTimestamp", "finalizers")


#: Strings up to this long are shared between cached objects (:func:`sys.intern`).
SHARED_STRING = 64
_intern = sys.intern


def _shared(value: Any) -> Any:
    """``value`` with its keys and short strings interned: 10,000 links decoded from JSON
    otherwise hold 10,000 copies of "lastTransitionTime", "True", "Ready", the provider's
    name... (a third of a cached link). Strings, the most of what it meets, are handled
    in place, without a call each (every status write's answer goes through here)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) is str:
                k = _intern(k)
            if type(v) is str:
                out[k] = _intern(v) if len(v) <= SHARED_STRING else v
            elif isinstance(v, dict | list):
                out[k] = _shared(v)
            else:
                out[k] = v
        return out
    if isinstance(value, list):
        return [_shared(v) for v in value]
    if type(value) is str and len(value) <= SHARED_STRING:
        return _intern(value)
    return value


def _decoded_size(key: str, value: object) -> int:
    return len(key) + (len(value) * 3 // 4 if isinstance(value, str) else 0)


def slim_secret(body: RawBody, *, keep: Collection[str], read: bool) -> RawBody:
    """A token Secret as the cache holds it (contract §9.14, §9.16: memory grows with links,
    not with what tenants put into labelled Secrets): :func:`slim`'s metadata, and of its
    data only the keys in ``keep`` (token and format keys), the size of the others in
    ``omittedBytes`` (for the "too large to take a refreshed token" check); with ``read``
    False (no link reads it) no data at all, ``dataOmitted`` set. Idempotent."""
    data = body.get("data") or {}
    omitted = body.get("omittedBytes", 0) + sum(
        _decoded_size(k, v) for k, v in data.items() if k not in keep)
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in ("data", "omittedBytes", "dataOmitted")}
    if read and not body.get("dataOmitted"):
        out["data"] = {k: v for k, v in data.items() if k in keep}
        if omitted:
            out["omittedBytes"] = omitted
    else:
        out["dataOmitted"] = True
    return slim(out)  # type: ignore[arg-type]


def slim(body: RawBody) -> RawBody:
    """The object with only the metadata the engine reads (contract §9.14: every cache holds
    only what the engine reads): identity, resourceVersion, generation, and the labels and
    annotations under ``externalauth.io/``; spec and status as they are, their keys and
    short strings shared; a Secret's data values as they are (never interned)."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {sys.intern(k): meta[k] for k in KEPT_METADATA if k in meta}  # type: ignore[literal-required]
    if isinstance(kept.get("namespace"), str):
        kept["namespace"] = sys.intern(kept["namespace"])  # shared by every object in it
    for field in ("labels", "annotations"):
        ours = {k: v for k, v in (meta.get(field) or {}).items() if k.startswith(PREFIX)}  # type: ignore[attr-defined]
        if ours:
            kept[sys.intern(field)] = _shared(ours)
    slimmed: dict[str, Any] = {}
    for key, value in body.items():
        if key == "metadata":
            continue
        if key == "data" and isinstance(value, dict):  # token values: keys shared only
            slimmed[sys.intern(key)] = {sys.intern(k) if isinstance(k, str) else k: v for k, v in value.items()}
        else:
            slimmed[sys.intern(key)] = _shared(value)
    slimmed["metadata"] = kept
    return slimmed  # type: ignore[return-value]
