"""Go-style duration strings ("15m", "1h30m", "90s") and RFC 3339 timestamps. Pure."""

from __future__ import annotations

import datetime as dt
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
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go duration like ``1h30m``; raise :class:`InvalidInputError` otherwise."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise InvalidInputError(f"{text!r} is not a duration like 15m or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
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
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    The error message never quotes ``text`` (it may come from a Secret): callers
    prefix the key or field it came from.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("empty timestamp")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError("not an RFC 3339 timestamp like 2030-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise InvalidInputError("no time zone in the timestamp (use Z for UTC)")
    return parsed.astimezone(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with second precision and a ``Z`` suffix."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
