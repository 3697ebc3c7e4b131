"""What a token-endpoint or validation answer means (contract §9.4 to §9.6). Pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping

DEAD_GRANT_ERRORS = frozenset({"invalid_grant", "bad_refresh_token", "expired_token"})
CLIENT_REJECTED_ERRORS = frozenset(
    {"invalid_client", "incorrect_client_credentials", "unauthorized_client"}
)
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
_SAFE_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")


class TokenVerdict(enum.StrEnum):
    SUCCESS = "success"
    DEAD_GRANT = "dead_grant"
    CLIENT_REJECTED = "client_rejected"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclasses.dataclass(frozen=True)
class TokenAnswer:
    """A token-endpoint answer reduced to what classification needs (no token values)."""

    status: int | None  # None: no HTTP answer (timeout, refused, TLS failure)
    error: str | None = None  # the OAuth "error" code, if any
    retry_after: float | None = None
    has_access_token: bool = False


@dataclasses.dataclass(frozen=True)
class Classified:
    verdict: TokenVerdict
    message: str
    retry_after: float | None = None


def safe_code(code: str | None) -> str:
    """An OAuth error code fit for a message: from the RFC vocabulary, else 'unknown'."""
    if code and _SAFE_CODE.match(code):
        return code
    return "unknown"


def classify_token_answer(answer: TokenAnswer) -> Classified:
    """Decide what a token-endpoint answer means. Errors in the body win over the
    HTTP status, because GitHub sends them with HTTP 200."""
    code = safe_code(answer.error) if answer.error else None
    if answer.error in DEAD_GRANT_ERRORS:
        return Classified(TokenVerdict.DEAD_GRANT, f"the provider refused the refresh token ({code})")
    if answer.error in CLIENT_REJECTED_ERRORS:
        return Classified(
            TokenVerdict.CLIENT_REJECTED, f"the provider rejected the OAuth client credentials ({code})"
        )
    if answer.status is None:
        return Classified(TokenVerdict.TRANSIENT, "the token endpoint did not answer")
    if answer.status == 429 or answer.status >= 500 or answer.error in TRANSIENT_ERRORS:
        what = f"error {code}" if code else f"HTTP {answer.status}"
        return Classified(
            TokenVerdict.TRANSIENT, f"the token endpoint answered {what}", answer.retry_after
        )
    if answer.error:
        return Classified(TokenVerdict.PERMANENT, f"the token endpoint answered error {code}")
    if answer.status == 401:
        return Classified(
            TokenVerdict.CLIENT_REJECTED, "the provider rejected the OAuth client credentials (HTTP 401)"
        )
    if 200 <= answer.status < 300 and answer.has_access_token:
        return Classified(TokenVerdict.SUCCESS, "refreshed")
    if 200 <= answer.status < 300:
        return Classified(TokenVerdict.TRANSIENT, "the token endpoint answered without an access token")
    return Classified(TokenVerdict.PERMANENT, f"the token endpoint answered HTTP {answer.status}")


class ValidationVerdict(enum.StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    UNREACHABLE = "unreachable"


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    verdict: ValidationVerdict
    message: str
    account: str | None = None
    retry_after: float | None = None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def rate_limit_retry_after(headers: Mapping[str, str], *, now: dt.datetime) -> float | None:
    """Seconds until a rate limit resets, from ``retry-after`` or ``x-ratelimit-reset`` (epoch)."""
    retry = _number(headers.get("retry-after"))
    if retry is not None:
        return max(0.0, retry)
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is not None:
        return max(0.0, reset - now.timestamp())
    reset = _number(headers.get("ratelimit-reset"))  # IETF draft: seconds from now
    if reset is not None:
        return max(0.0, reset)
    return None


def is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    if status == 429:
        return True
    if status != 403:
        return False
    return (
        headers.get("x-ratelimit-remaining", "").strip() == "0"
        or headers.get("ratelimit-remaining", "").strip() == "0"
        or "retry-after" in headers
    )


def classify_validation(
    *,
    status: int | None,
    headers: Mapping[str, str],
    body: object,
    account_fields: tuple[str, ...],
    now: dt.datetime,
) -> ValidationOutcome:
    """``headers`` must have lower-case names. ``body`` is the parsed JSON, if any."""
    if status is None:
        return ValidationOutcome(ValidationVerdict.UNREACHABLE, "the validation endpoint did not answer")
    if is_rate_limited(status, headers):
        return ValidationOutcome(
            ValidationVerdict.RATE_LIMITED,
            f"the provider is rate-limiting validation (HTTP {status})",
            retry_after=rate_limit_retry_after(headers, now=now),
        )
    if status in (401, 403):
        return ValidationOutcome(ValidationVerdict.INVALID, f"the provider rejected the token (HTTP {status})")
    if 200 <= status < 300:
        account = None
        if isinstance(body, Mapping):
            for field in account_fields:
                value = body.get(field)
                if isinstance(value, str | int) and str(value):
                    account = str(value)[:256]
                    break
        return ValidationOutcome(ValidationVerdict.VALID, "the provider accepted the token", account)
    return ValidationOutcome(
        ValidationVerdict.UNREACHABLE, f"the validation endpoint answered HTTP {status}"
    )
