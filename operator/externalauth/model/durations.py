"""Go-style duration strings ("15m", "1h30m", "90s") and RFC 3339 timestamps. Pure."""

from __future__ import annotations

import datetime as dt
import functools
import re

from externalauth.errors import InvalidInputError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", re.ASCII)
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$", re.ASCII)
# No duration the operator reads is meaningfully longer than a year; anything beyond
# (``99999999999h`` passes the CRD's pattern) is a typo, not a wish.
MAX_DURATION = dt.timedelta(days=365)
MAX_DURATION_TEXT = "8760h"

# RFC 3339 §5.6 date-time (a space for the "T" is allowed, as the RFC notes).
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)
MIN_YEAR, MAX_YEAR = 1970, 9999
#: How many distinct strings (and moments) each parser below remembers. The same ones come
#: back many times: a link's refreshBefore and its Secret's expiry are read at every look
#: at it (two or three per refresh), its status times at every decision: twice as many as
#: the links reconciled at once. Bounded: about 250 KiB each however many links there are.
REMEMBERED = 1024


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go duration like ``1h30m`` of at most a year; raise :class:`InvalidInputError` otherwise."""
    if not isinstance(text, str):
        raise InvalidInputError("the value is not a duration like 15m or 1h30m")
    return _duration(text)


@functools.lru_cache(maxsize=REMEMBERED)
def _duration(text: str) -> dt.timedelta:
    """:func:`parse_duration` of a string (remembered: a timedelta is immutable; what
    raises is not remembered)."""
    if len(text) > 64 or not _WHOLE.match(text):
        raise InvalidInputError(f"{text[:40]!r} is not a duration like 15m or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if not seconds <= MAX_DURATION.total_seconds():  # also catches inf from 400 digits
        raise InvalidInputError(f"{text[:40]!r} is longer than {MAX_DURATION_TEXT} (a year)")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """Short human form: ``2h5m``, ``45s``, ``-3m`` (for tables and messages)."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours}h"
    if hours:
        return f"{sign}{hours}h{minutes}m"
    if minutes:
        return f"{sign}{minutes}m{seconds}s" if seconds else f"{sign}{minutes}m"
    return f"{sign}{seconds}s"


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp (years 1970 to 9999) into an aware UTC datetime.

    Anything else raises :class:`InvalidInputError` whose message describes the
    problem without repeating the value (callers name the key).
    """
    if not isinstance(text, str):
        raise InvalidInputError("the timestamp is empty")
    return _moment(text)


@functools.lru_cache(maxsize=REMEMBERED)
def _moment(text: str) -> dt.datetime:
    """:func:`parse_time` of a string (remembered: a datetime is immutable; what raises is
    not remembered)."""
    if not text.strip():
        raise InvalidInputError("the timestamp is empty")
    match = _RFC3339.match(text.strip())
    if match is None:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?$", text.strip(), re.ASCII):
            raise InvalidInputError("the timestamp has no time zone (use Z for UTC)")
        raise InvalidInputError("the timestamp is not RFC 3339 (like 2030-01-02T03:04:05Z)")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        if int(off_h or 0) > 23 or int(off_m or 0) > 59:
            raise ValueError("offset out of range")
        offset = dt.timedelta(0) if zulu else (1 if sign == "+" else -1) * dt.timedelta(
            hours=int(off_h), minutes=int(off_m))
        local = dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                            min(int(second), 59),  # a leap second counts as :59
                            int((fraction or "0")[:6].ljust(6, "0")),
                            tzinfo=dt.timezone(offset))
        moment = local.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidInputError(
            f"the timestamp is not a valid date and time between years {MIN_YEAR} and {MAX_YEAR}"
        ) from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise InvalidInputError(f"the timestamp lies outside years {MIN_YEAR} to {MAX_YEAR}")
    return moment


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with second precision and a ``Z`` suffix (four-digit years: strftime's
    ``%Y`` writes year 1 as ``1``, and is slower). A UTC moment's text is remembered: an
    expiry is written into the status, the seed of its jitter and the Secret several
    times a refresh. (Only UTC's: two moments of another zone that compare equal may lie
    an hour apart, in the hour a clock turns back.)"""
    if moment.tzinfo is dt.UTC:
        return _utc_text(moment)
    return _text(moment.astimezone(dt.UTC))


@functools.lru_cache(maxsize=REMEMBERED)
def _utc_text(moment: dt.datetime) -> str:
    return _text(moment)


def _text(m: dt.datetime) -> str:
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"
