"""The token Secret (contract §3): parsing its data and rendering the keys we write. Pure."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import math
import re
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

# Whitespace (Unicode's idea of it) or a C0/DEL/C1 control character: never inside a
# token, a token type or a scope. Surrounding whitespace (``echo`` adds a newline) is
# stripped first, as it always was.
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 6749 §7.1 / appendix A.13: type-name = 1*name-char, name-char = "-" / "." / "_" / DIGIT / ALPHA
_TYPE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The longest lifetime believed from a provider answer (``expires_in: 1e308``).
MAX_LIFETIME = dt.timedelta(days=365)
# Entra puts its numeric codes in ``error_codes`` and at the start of the description.
_AADSTS = re.compile(r"^AADSTS(\d{1,9})\b")
_MAX_ERROR_CODES = 8


@dataclasses.dataclass(frozen=True, slots=True)  # one per cached token Secret (Caches.secret_tokens)
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
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInputError(f"key {key} is not valid base64") from None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"key {key} is not UTF-8 text") from None


def _token(data: Mapping[str, str], key: str) -> str | None:
    """A token key: stripped, and without whitespace or control characters inside."""
    text = _decode(data, key)
    if text is None or not text.strip():
        return None
    text = text.strip()
    if _WHITESPACE_OR_CONTROL.search(text):
        raise InvalidInputError(f"key {key} contains whitespace or control characters")
    return text


def _time_key(data: Mapping[str, str], key: str) -> dt.datetime | None:
    text = _decode(data, key)
    if text is None or not text.strip():
        return None
    try:
        return parse_time(text)
    except InvalidInputError as e:
        raise InvalidInputError(f"key {key}: {e}") from None


def check_secret_type(secret_type: str | None) -> None:
    """Raise InvalidInputError unless a token Secret may have this type (None: not known)."""
    if secret_type is not None and secret_type not in ACCEPTED_TYPES:
        raise InvalidInputError(f"type {secret_type} is not Opaque or {SECRET_TYPE}")


def parse_secret_data(data: Mapping[str, str] | None, *, secret_type: str | None = None) -> TokenSet:
    """Turn a Secret's base64 ``data`` into a :class:`TokenSet`, or raise InvalidInputError.

    Messages name the key and the problem, never the value of any key.
    """
    check_secret_type(secret_type)
    data = data or {}
    access = _token(data, ACCESS_TOKEN)
    if access is None:
        raise InvalidInputError(f"key {ACCESS_TOKEN} is missing or empty")
    refresh = _token(data, REFRESH_TOKEN)
    token_type = (_decode(data, TOKEN_TYPE) or "").strip() or "bearer"
    if not _TYPE_NAME.match(token_type):
        raise InvalidInputError(f"key {TOKEN_TYPE} is not a token type name (letters, digits, '-', '.', '_')")
    scope = _decode(data, SCOPE)
    if scope is not None and _CONTROL.search(scope):
        raise InvalidInputError(f"key {SCOPE} contains control characters")
    return TokenSet(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if refresh else None,
        token_type=token_type,
        expiry=_time_key(data, EXPIRY),
        refresh_token_expiry=_time_key(data, REFRESH_TOKEN_EXPIRY),
        scope=scope,
    )


@dataclasses.dataclass(frozen=True)
class AnswerReading:
    """What a token endpoint's answer (decoded JSON) holds, read defensively.

    ``tokens`` is None when there is no usable access token; ``refresh_token`` is a
    usable new refresh token even then (the old one may be spent: keep it if you
    can). ``notes`` say what was not believed, without any value.
    """

    tokens: TokenSet | None
    error: str | None = None
    refresh_token: SecretStr | None = None
    notes: tuple[str, ...] = ()
    error_codes: tuple[int, ...] = ()  # numeric codes refining ``error`` (Entra's AADSTS)


def _error_codes(payload: Mapping[str, object]) -> tuple[int, ...]:
    """Numeric error codes (Entra: ``"error_codes": [70008]``, or ``AADSTS70008:`` opening
    the description). Only small non-negative integers are believed; never raises."""
    raw = payload.get("error_codes")
    codes: list[int] = []
    if isinstance(raw, list):
        codes = [c for c in raw[:_MAX_ERROR_CODES]
                 if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 10**9]
    if not codes:
        description = payload.get("error_description")
        match = _AADSTS.match(description) if isinstance(description, str) else None
        if match:
            codes = [int(match.group(1))]
    return tuple(codes)


def _secret_text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _number(value: object) -> float | None:
    """A JSON number or a numeric string as a float (huge integers clamped, no OverflowError)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(max(-(10**300), min(value, 10**300)))
    if isinstance(value, float):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _lifetime(value: object, key: str, notes: list[str]) -> dt.timedelta | None:
    """``expires_in``-like: a positive, finite number of seconds (a numeric string too),
    capped at :data:`MAX_LIFETIME`. Anything else: unknown (None) and a note."""
    if value is None:
        return None
    number = _number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        notes.append(f"{key} is not a positive number of seconds; treated as unknown")
        return None
    if number > MAX_LIFETIME.total_seconds():
        notes.append(f"{key} capped at a year")
        return MAX_LIFETIME
    return dt.timedelta(seconds=number)


def _scope(value: object, notes: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        value = " ".join(value)
    if not isinstance(value, str):
        notes.append("scope is not a string; ignored")
        return None
    if _CONTROL.search(value):
        notes.append("scope contains control characters; ignored")
        return None
    return value.strip() or None


def read_token_answer(payload: object, *, now: dt.datetime) -> AnswerReading:
    """Read a token endpoint's decoded answer without trusting it (contract §9.13).

    ``now`` is when the answer ARRIVED: lifetimes (``expires_in``) count from then, on the
    local clock, which is what the operator schedules against (so a provider whose
    clock is off does not move the expiry). Never raises. Lifetimes beyond a year are
    capped; unreadable ones are unknown; a token type that is not an RFC 6749 name becomes ``bearer``. A token with
    whitespace or control characters inside is still kept (never lose what was
    obtained): the Secret parser and the output formats refuse it later, and say so.
    """
    if not isinstance(payload, Mapping):
        return AnswerReading(tokens=None, notes=("the answer is not a JSON object",))
    notes: list[str] = []
    raw_error = payload.get("error")
    error = None
    if raw_error is not None and raw_error != "":
        error = raw_error if isinstance(raw_error, str) else "unknown"
    access = _secret_text(payload.get("access_token"))
    if payload.get("access_token") is not None and access is None:
        notes.append("access_token is not a non-empty string")
    refresh = _secret_text(payload.get("refresh_token"))
    if payload.get("refresh_token") not in (None, "") and refresh is None:
        notes.append("refresh_token is not a non-empty string; ignored")
    raw_type = payload.get("token_type")
    token_type = raw_type.strip().lower() if isinstance(raw_type, str) else ""
    if not _TYPE_NAME.match(token_type):
        if raw_type is not None:
            notes.append("token_type is not a token type name; bearer assumed")
        token_type = "bearer"
    lifetime = _lifetime(payload.get("expires_in"), "expires_in", notes)
    rt_lifetime = _lifetime(payload.get("refresh_token_expires_in"), "refresh_token_expires_in", notes)
    scope = _scope(payload.get("scope"), notes)
    refresh_secret = SecretStr(refresh) if refresh else None
    codes = _error_codes(payload) if error is not None else ()
    if access is None:
        return AnswerReading(tokens=None, error=error, refresh_token=refresh_secret, notes=tuple(notes),
                             error_codes=codes)
    tokens = TokenSet(
        access_token=SecretStr(access),
        refresh_token=refresh_secret,
        token_type=token_type,
        expiry=now + lifetime if lifetime is not None else None,
        refresh_token_expiry=now + rt_lifetime if rt_lifetime is not None else None,
        scope=scope,
    )
    return AnswerReading(tokens=tokens, error=error, refresh_token=refresh_secret, notes=tuple(notes),
                         error_codes=codes)


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def render_token_keys(tokens: TokenSet) -> dict[str, str]:
    """The base64 ``data`` entries for a token set. Keys never blank: an absent value is
    simply not written, so the stored one (if any) is kept (contract §9.4)."""
    out = {ACCESS_TOKEN: b64(tokens.access_token.reveal()), TOKEN_TYPE: b64(tokens.token_type)}
    if tokens.refresh_token:
        out[REFRESH_TOKEN] = b64(tokens.refresh_token.reveal())
    if tokens.expiry is not None:
        out[EXPIRY] = b64(format_time(tokens.expiry))
    if tokens.refresh_token_expiry is not None:
        out[REFRESH_TOKEN_EXPIRY] = b64(format_time(tokens.refresh_token_expiry))
    if tokens.scope:
        out[SCOPE] = b64(tokens.scope)
    return out
