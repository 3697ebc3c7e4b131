"""Can a token Secret take refreshed tokens? Asked before a refresh token is spent
(contract §3: never spend what cannot be stored). Pure."""

from __future__ import annotations

from collections.abc import Mapping

from externalauth.model.bodies import RawBody

#: The API server's limit on a Secret's data (bytes, decoded).
SECRET_LIMIT = 1024 * 1024
#: Room kept for tokens that grow on refresh and for metadata.
HEADROOM = 64 * 1024


def _decoded(b64: str) -> int:
    return len(b64) * 3 // 4


def unwritable(secret: RawBody, *, extra: Mapping[str, str | None]) -> str | None:
    """Why ``secret`` could not store refreshed tokens plus the format keys ``extra``
    (base64 values as written; None removes a key), or None when it can."""
    if secret.get("immutable") is True:
        return "the Secret is immutable: a refreshed token could not be stored in it"
    data: dict[str, str | None] = {**(secret.get("data") or {}), **extra}
    size = secret.get("omittedBytes", 0) + sum(len(k) + _decoded(v) for k, v in data.items() if isinstance(v, str))
    if size + HEADROOM > SECRET_LIMIT:
        return (f"the Secret is too large to take a refreshed token (about {size // 1024} KiB; "
                f"the API server's limit is {SECRET_LIMIT // 1024} KiB)")
    return None
