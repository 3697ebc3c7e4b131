"""What a token-endpoint or validation answer means (contract §9.4 to §9.6). Pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import enum
import math
import re
from collections.abc import Mapping

from externalauth.policy import timing

DEAD_GRANT_ERRORS = frozenset({"invalid_grant", "bad_refresh_token", "expired_token"})
CLIENT_REJECTED_ERRORS = frozenset(
    {"invalid_client", "incorrect_client_credentials", "unauthorized_client"}
)
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
_SAFE_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")
# The longest wait a provider may impose through Retry-After or a rate-limit reset
# (contract §9.14): an hour, whatever the header says.


class TokenVerdict(enum.StrEnum):
    SUCCESS = "success"
    DEAD_GRANT = "dead_grant"
    CLIENT_REJECTED = "client_rejected"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    # A 2xx whose body could not be used (not a JSON object, too large, cut off, no
    # usable access token): the provider may have spent the refresh token, so sending
    # it again blindly could revoke the grant (RFC 9700 §4.14). Not retried.
    UNUSABLE_ANSWER = "unusable_answer"


@dataclasses.dataclass(frozen=True)
class TokenAnswer:
    """A token-endpoint answer reduced to what classification needs (no token values)."""

    status: int | None  # None: no HTTP answer (timeout, refused, TLS failure)
    error: str | None = None  # the OAuth "error" code, if any
    retry_after: float | None = None
    has_access_token: bool = False
    unreadable: bool = False  # the body was not a JSON object, too large or cut off


@dataclasses.dataclass(frozen=True)
class Classified:
    verdict: TokenVerdict
    message: str
    retry_after: float | None = None
    # False: no HTTP answer came back. After the request was sent, a provider may have
    # rotated the refresh token anyway (an answer lost in flight).
    answered: bool = True


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
        return Classified(TokenVerdict.TRANSIENT, "the token endpoint did not answer", answered=False)
    if 300 <= answer.status < 400:
        # Never followed (contract §9.10): the refresh token reached no one but the
        # endpoint we trust, which issued nothing. Safe to retry with backoff; a URL
        # that moved is the provider admin's to fix, not a reason to sign in again.
        return Classified(
            TokenVerdict.TRANSIENT,
            f"the token endpoint answered HTTP {answer.status}, a redirect, which is never followed "
            "(check the ExternalAuthProvider's token URL)",
        )
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
        what = ("with a body that could not be read (not a JSON object, too large or cut off)"
                if answer.unreadable else "without a usable access token")
        return Classified(
            TokenVerdict.UNUSABLE_ANSWER,
            f"the token endpoint answered HTTP {answer.status} {what}; the refresh token may already be spent",
        )
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


def _seconds(value: str | None) -> float | None:
    """A non-negative number (``inf`` allowed) from a header value; else None."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if math.isnan(number) or number < 0:
        return None
    return number


def _http_date_delay(value: str, *, now: dt.datetime) -> float | None:
    """Seconds until an HTTP-date (RFC 9110 ``Retry-After: <date>``), or None."""
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return (moment - now).total_seconds()
    except OverflowError:  # pragma: no cover - datetime differences do not overflow
        return None


def rate_limit_retry_after(headers: Mapping[str, str], *, now: dt.datetime) -> float | None:
    """Seconds until a rate limit resets, from ``retry-after`` (seconds or an HTTP-date),
    ``x-ratelimit-reset`` (Unix time) or ``ratelimit-reset`` (seconds from now).

    Capped at :data:`externalauth.policy.timing.MAX_RETRY_AFTER`; a value that is not a number or a date, NaN or
    negative is ignored (None). ``headers`` must have lower-case names.
    """
    raw = headers.get("retry-after")
    retry = _seconds(raw)
    if retry is None and raw is not None:
        retry = _http_date_delay(raw, now=now)
    if retry is not None:
        return timing.capped_retry_after(retry)
    reset = _seconds(headers.get("x-ratelimit-reset"))
    if reset is not None:
        return timing.capped_retry_after(reset - now.timestamp())
    reset = _seconds(headers.get("ratelimit-reset"))  # IETF draft: seconds from now
    if reset is not None:
        return timing.capped_retry_after(reset)
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
