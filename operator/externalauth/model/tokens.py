"""The token Secret (contract §3): parsing its data and rendering the keys we write. Pure."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
from collections.abc import Mapping

from externalauth.errors import InvalidInputError
from externalauth.model.durations import format_time, parse_time
from externalauth.model.secure import SecretStr

ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"
TOKEN_TYPE = "token_type"
EXPIRY = "expiry"
REFRESH_TOKEN_EXPIRY = "refresh_token_expiry"
SCOPE = "scope"
TOKEN_KEYS = (ACCESS_TOKEN, REFRESH_TOKEN, TOKEN_TYPE, EXPIRY, REFRESH_TOKEN_EXPIRY, SCOPE)
SECRET_TYPE = "externalauth.io/oauth2-token"
ACCEPTED_TYPES = ("Opaque", SECRET_TYPE)


@dataclasses.dataclass(frozen=True)
class TokenSet:
    """What a token Secret holds, or what a token exchange returned."""

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    token_type: str = "bearer"
    expiry: dt.datetime | None = None
    refresh_token_expiry: dt.datetime | None = None
    scope: str | None = None

    @property
    def refreshable(self) -> bool:
        return bool(self.refresh_token)


def _decode(data: Mapping[str, str], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInputError(f"key {key} is not valid base64-encoded UTF-8") from None


def parse_secret_data(data: Mapping[str, str] | None, *, secret_type: str | None = None) -> TokenSet:
    """Turn a Secret's base64 ``data`` into a :class:`TokenSet`, or raise InvalidInputError.

    Messages name the key and the problem, never the value of a token key.
    """
    if secret_type is not None and secret_type not in ACCEPTED_TYPES:
        raise InvalidInputError(f"type {secret_type} is not Opaque or {SECRET_TYPE}")
    data = data or {}
    access = _decode(data, ACCESS_TOKEN)
    if not access or not access.strip():
        raise InvalidInputError(f"key {ACCESS_TOKEN} is missing or empty")
    refresh = _decode(data, REFRESH_TOKEN)
    token_type = (_decode(data, TOKEN_TYPE) or "bearer").strip() or "bearer"
    expiry_text = _decode(data, EXPIRY)
    rt_expiry_text = _decode(data, REFRESH_TOKEN_EXPIRY)
    try:
        expiry = parse_time(expiry_text) if expiry_text and expiry_text.strip() else None
    except InvalidInputError as e:
        raise InvalidInputError(f"key {EXPIRY}: {e}") from None
    try:
        rt_expiry = parse_time(rt_expiry_text) if rt_expiry_text and rt_expiry_text.strip() else None
    except InvalidInputError as e:
        raise InvalidInputError(f"key {REFRESH_TOKEN_EXPIRY}: {e}") from None
    return TokenSet(
        access_token=SecretStr(access.strip()),
        refresh_token=SecretStr(refresh.strip()) if refresh and refresh.strip() else None,
        token_type=token_type,
        expiry=expiry,
        refresh_token_expiry=rt_expiry,
        scope=_decode(data, SCOPE),
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def render_token_keys(tokens: TokenSet) -> dict[str, str]:
    """The base64 ``data`` entries for a token set. Keys never blank: an absent value is
    simply not written, so the stored one (if any) is kept (contract §9.4)."""
    out = {ACCESS_TOKEN: _b64(tokens.access_token.reveal()), TOKEN_TYPE: _b64(tokens.token_type)}
    if tokens.refresh_token:
        out[REFRESH_TOKEN] = _b64(tokens.refresh_token.reveal())
    if tokens.expiry is not None:
        out[EXPIRY] = _b64(format_time(tokens.expiry))
    if tokens.refresh_token_expiry is not None:
        out[REFRESH_TOKEN_EXPIRY] = _b64(format_time(tokens.refresh_token_expiry))
    if tokens.scope:
        out[SCOPE] = _b64(tokens.scope)
    return out
