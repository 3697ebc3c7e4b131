"""What a token-endpoint or validation answer means (contract §9.4 to §9.6, §9.14), and
what its headers say about rate limits and the provider's clock. Pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import enum
import math
import re
from collections.abc import Mapping

from externalauth.model.secure import SecretStr
from externalauth.model.tokens import TokenSet
from externalauth.policy import timing
from externalauth.policy.timing import MAX_RETRY_AFTER
from externalauth.providers import ErrorMeaning, Quirks

__all__ = ["MAX_RETRY_AFTER"]  # re-exported: the cap lives in policy/timing.py

DEAD_GRANT_ERRORS = frozenset({"invalid_grant", "bad_refresh_token", "expired_token"})
CLIENT_REJECTED_ERRORS = frozenset(
    {"invalid_client", "incorrect_client_credentials", "unauthorized_client"}
)
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
_SAFE_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")
#: A rate-limit reset this large is a Unix time (GitHub's x-ratelimit-reset, GitLab's
#: RateLimit-Reset); smaller, it is seconds from now (the IETF draft's RateLimit-Reset).
#: 1e9 s is 2001-09-09, and 31 years: no provider waits that long.
EPOCH_THRESHOLD = 1e9
#: A clock difference with the provider above this is worth telling (contract §9, issue 10).
CLOCK_SKEW_WARNING = 60.0
_STRUCTURED_PARAM = re.compile(r"(?:^|[;,\s])([a-z]+)\s*=\s*([0-9.]+)")


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
    error_codes: tuple[int, ...] = ()  # provider codes refining ``error`` (Entra's AADSTS)
    rate_limited: bool = False  # 429, or 403 with rate-limit signs (:func:`is_rate_limited`)


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


def _meaning(answer: TokenAnswer, quirks: Quirks | None) -> ErrorMeaning | None:
    """What the error means for this provider type: its own codes first (contract §9.5:
    Gitea's unauthorized_client is a dead grant), then the RFC's."""
    if quirks is not None:
        for number in answer.error_codes:
            if number in quirks.error_codes:
                return quirks.error_codes[number]
        if answer.error in quirks.dead_grant_errors:
            return ErrorMeaning.DEAD_GRANT
    if answer.error in DEAD_GRANT_ERRORS:
        return ErrorMeaning.DEAD_GRANT
    if answer.error in CLIENT_REJECTED_ERRORS:
        return ErrorMeaning.CLIENT_REJECTED
    return None


def _code_text(answer: TokenAnswer) -> str:
    """``invalid_grant``, or ``invalid_grant 70008`` when the provider gave a number."""
    code = safe_code(answer.error)
    return f"{code} {answer.error_codes[0]}" if answer.error_codes else code


def classify_token_answer(answer: TokenAnswer, *, quirks: Quirks | None = None) -> Classified:
    """Decide what a token-endpoint answer means for a provider of ``quirks``' type (None:
    the RFC's meanings only). Errors in the body win over the HTTP status, because GitHub
    sends them with HTTP 200."""
    meaning = _meaning(answer, quirks) if answer.error else None
    if meaning is ErrorMeaning.DEAD_GRANT:
        return Classified(TokenVerdict.DEAD_GRANT,
                          f"the provider refused the refresh token ({_code_text(answer)})")
    if meaning is ErrorMeaning.CLIENT_REJECTED:
        return Classified(TokenVerdict.CLIENT_REJECTED,
                          f"the provider rejected the OAuth client credentials ({_code_text(answer)})")
    if meaning is ErrorMeaning.TRANSIENT:
        return Classified(TokenVerdict.TRANSIENT, f"the token endpoint answered error {_code_text(answer)}",
                          answer.retry_after)
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
    if answer.rate_limited:
        return Classified(TokenVerdict.TRANSIENT,
                          f"the token endpoint is rate-limiting the operator (HTTP {answer.status})",
                          answer.retry_after)
    if answer.status == 429 or answer.status >= 500 or answer.error in TRANSIENT_ERRORS:
        what = f"error {safe_code(answer.error)}" if answer.error else f"HTTP {answer.status}"
        return Classified(
            TokenVerdict.TRANSIENT, f"the token endpoint answered {what}", answer.retry_after
        )
    if answer.error:
        return Classified(TokenVerdict.PERMANENT, f"the token endpoint answered error {_code_text(answer)}")
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


@dataclasses.dataclass(frozen=True)
class ExchangeResult:
    """What a refresh came to.

    ``tokens``: only with SUCCESS; its refresh token is the new one, or the one sent when
    the provider did not rotate it. ``refresh_token``: the new refresh token the answer
    carried, if usable; with UNUSABLE_ANSWER it is all that could be salvaged (the old
    one may be spent: store it if you can). ``notes``: what in the answer was not
    believed (no values), for logs or an event. ``clock_skew``: the provider's clock
    minus ours in seconds, from its Date header (None: no answer, or no usable Date);
    :func:`classifying.skew_message` says it in a sentence when it matters."""

    classified: Classified
    tokens: TokenSet | None = None
    refresh_token: SecretStr | None = None
    notes: tuple[str, ...] = ()
    clock_skew: float | None = None


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
    # Provider clock minus local clock, in seconds, from the answer's Date header (None:
    # no usable Date). Surfaced by the engine when beyond CLOCK_SKEW_WARNING.
    clock_skew: float | None = None


# --- header arithmetic ---------------------------------------------------------------
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


def _capped(seconds: float) -> float:
    return timing.capped_retry_after(seconds)


def _http_date(value: str | None) -> dt.datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) as an aware datetime, or None."""
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def _delay(moment: dt.datetime, *, since: dt.datetime) -> float | None:
    try:
        return (moment - since).total_seconds()
    except OverflowError:  # pragma: no cover - datetime differences do not overflow
        return None


def provider_now(headers: Mapping[str, str], *, now: dt.datetime) -> dt.datetime:
    """The provider's idea of now: its ``Date`` header when it has a usable one, else ``now``.
    Absolute times the provider sends (a reset as a Unix time, a Retry-After date) are
    measured against this, so that a local clock that is off does not move them."""
    return _http_date(headers.get("date")) or now


def _structured(headers: Mapping[str, str]) -> dict[str, float]:
    """The IETF draft's structured ``RateLimit`` header: ``limit=100, remaining=0, reset=50``
    (draft 03-07) or ``"default";r=0;t=50`` (draft 08+), as numbers by parameter name."""
    raw = headers.get("ratelimit")
    if not raw or len(raw) > 1024:
        return {}
    found: dict[str, float] = {}
    for name, value in _STRUCTURED_PARAM.findall(raw.lower()):
        number = _seconds(value)
        if number is not None:
            found.setdefault(name, number)
    return found


def _reset_delay(value: float, *, reference: dt.datetime) -> float:
    """A reset header's value as seconds from now: a Unix time when it is that large."""
    if value >= EPOCH_THRESHOLD:
        return value - reference.timestamp()
    return value


def rate_limit_retry_after(headers: Mapping[str, str], *, now: dt.datetime) -> float | None:
    """Seconds until a rate limit resets, from ``retry-after`` (seconds or an HTTP-date),
    ``x-ratelimit-reset`` or ``ratelimit-reset`` (a Unix time when it is that large: GitHub,
    GitLab, Azure DevOps; else seconds from now: the IETF draft), or the structured
    ``ratelimit`` header's ``reset``/``t``.

    Absolute times are measured against the provider's ``Date`` (its clock and its reset
    agree even when ours is off). Capped at :data:`MAX_RETRY_AFTER`; a value that is not a
    number or a date, NaN or negative is ignored (None). ``headers`` must have lower-case
    names.
    """
    reference = provider_now(headers, now=now)
    raw = headers.get("retry-after")
    retry = _seconds(raw)
    if retry is None and raw is not None:
        moment = _http_date(raw)
        retry = _delay(moment, since=reference) if moment is not None else None
    if retry is not None:
        return _capped(retry)
    for name in ("x-ratelimit-reset", "ratelimit-reset"):
        reset = _seconds(headers.get(name))
        if reset is not None:
            return _capped(_reset_delay(reset, reference=reference))
    structured = _structured(headers)
    reset = structured.get("t", structured.get("reset"))
    if reset is not None:
        return timing.capped_retry_after(reset)
    return None


def rate_limit_remaining(headers: Mapping[str, str]) -> float | None:
    """The request budget the provider says is left (``x-ratelimit-remaining``,
    ``ratelimit-remaining`` or the structured ``ratelimit``'s ``remaining``/``r``), if it
    says so. Azure DevOps counts it in its own units (TSTUs); it is reported as given."""
    for name in ("x-ratelimit-remaining", "ratelimit-remaining"):
        remaining = _seconds(headers.get(name))
        if remaining is not None and math.isfinite(remaining):
            return remaining
    structured = _structured(headers)
    remaining = structured.get("r", structured.get("remaining"))
    return remaining if remaining is not None and math.isfinite(remaining) else None


def is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """429, or a 403 with a rate-limit sign (nothing left, or a Retry-After)."""
    if status == 429:
        return True
    if status != 403:
        return False
    return rate_limit_remaining(headers) == 0 or "retry-after" in headers


def exhausted(status: int, headers: Mapping[str, str]) -> bool:
    """A successful answer that says the budget is now spent (``remaining: 0``) and when it
    comes back: the next request would be refused, so it should wait for the reset."""
    return 200 <= status < 300 and rate_limit_remaining(headers) == 0 and any(
        name in headers for name in ("x-ratelimit-reset", "ratelimit-reset", "retry-after", "ratelimit"))


def clock_skew(headers: Mapping[str, str], *, arrived: dt.datetime) -> float | None:
    """The provider's clock minus ours, in seconds, from the answer's ``Date`` header
    against when the answer arrived (None: no usable Date). ``Date`` has one-second
    resolution and is stamped before the answer travels, so the measure reads up to
    about a second (plus the network latency) low: fine against CLOCK_SKEW_WARNING."""
    moment = _http_date(headers.get("date"))
    if moment is None:
        return None
    seconds = _delay(moment, since=arrived)
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds, 1)


def skew_message(skew: float | None) -> str | None:
    """A stable sentence about a clock difference beyond CLOCK_SKEW_WARNING, else None.
    Minutes only, so that a skew that wobbles by seconds does not rewrite a status."""
    if skew is None or abs(skew) < CLOCK_SKEW_WARNING:
        return None
    minutes = max(1, round(abs(skew) / 60))
    unit = "minute" if minutes == 1 else "minutes"
    side = "ahead of" if skew > 0 else "behind"
    return (f"the provider's clock is about {minutes} {unit} {side} the operator's: refreshes are "
            "still timed on the operator's clock, but check the time sync (NTP) of both")


# --- validation -------------------------------------------------------------------------
def _insufficient_scope(headers: Mapping[str, str], body: object) -> bool:
    """RFC 6750 §3.1: the token was accepted but may not read this resource."""
    if "insufficient_scope" in headers.get("www-authenticate", "").lower():
        return True
    return isinstance(body, Mapping) and body.get("error") == "insufficient_scope"


#: Characters never kept in an account name from the provider: C0/C1 controls and DEL,
#: and the bidirectional-text controls (LRE..RLO, LRI..PDI, LRM/RLM/ALM) that could make
#: ``kubectl get eal`` show another name than the one stored (security review finding 10).
_UNPRINTABLE_ACCOUNT = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_account(value: str) -> str | None:
    """An account name fit for ``status.account``: without control and bidi characters,
    at most 256 characters; None when nothing is left."""
    cleaned = _UNPRINTABLE_ACCOUNT.sub("", value).strip()[:256]
    return cleaned or None


def _account(body: object, account_fields: tuple[str, ...]) -> str | None:
    if not isinstance(body, Mapping):
        return None
    for field in account_fields:
        value = body.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            cleaned = clean_account(str(value))
            if cleaned is not None:
                return cleaned
    return None


def classify_validation(
    *,
    status: int | None,
    headers: Mapping[str, str],
    body: object,
    account_fields: tuple[str, ...],
    now: dt.datetime,
    invalid_statuses: frozenset[int] = frozenset(),
) -> ValidationOutcome:
    """``headers`` must have lower-case names. ``body`` is the parsed JSON, if any.
    ``invalid_statuses``: answers that mean "not signed in" for this provider type
    (Azure DevOps: 203 with a sign-in page, or a 302 to one)."""
    if status is None:
        return ValidationOutcome(ValidationVerdict.UNREACHABLE, "the validation endpoint did not answer")
    if is_rate_limited(status, headers):
        return ValidationOutcome(
            ValidationVerdict.RATE_LIMITED,
            f"the provider is rate-limiting validation (HTTP {status})",
            retry_after=rate_limit_retry_after(headers, now=now),
        )
    if status in invalid_statuses:
        return ValidationOutcome(ValidationVerdict.INVALID,
                                 f"the provider answered HTTP {status}, its answer to a token it does not accept")
    if status == 403 and _insufficient_scope(headers, body):
        return ValidationOutcome(ValidationVerdict.VALID, "the provider accepted the token "
                                 "(its scopes do not allow reading the account: insufficient_scope)")
    if status in (401, 403):
        return ValidationOutcome(ValidationVerdict.INVALID, f"the provider rejected the token (HTTP {status})")
    if 200 <= status < 300:
        return ValidationOutcome(ValidationVerdict.VALID, "the provider accepted the token",
                                 _account(body, account_fields))
    return ValidationOutcome(
        ValidationVerdict.UNREACHABLE, f"the validation endpoint answered HTTP {status}"
    )
