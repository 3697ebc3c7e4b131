"""What ``externalauth status LINK`` shows: one link in detail. Pure: no I/O, no clock.

The link's fields and times (each as RFC 3339 plus "in 7h59m" / "3m ago"), every condition
with its reason, message and age, then the link's last events. Everything that came from
the provider or the cluster is printed with control characters escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from externalauth.cli.formatting import age, printable, render_table
from externalauth.errors import InvalidInputError
from externalauth.model.durations import format_duration, format_time, parse_time

#: Events shown under a link, the newest last.
LAST_EVENTS = 5
_CONDITION_ORDER = ("Ready", "Refreshable", "Validated")


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except InvalidInputError:
        return None


def when(value: Any, *, now: dt.datetime) -> str:
    """``2026-11-27T10:00:00Z (in 7h59m)``, ``... (3m ago)``, or ``-``."""
    moment = _time(value)
    if moment is None:
        return "-"
    delta = moment - now
    if abs(delta.total_seconds()) < 1:
        relative = "now"
    elif delta.total_seconds() > 0:
        relative = f"in {format_duration(delta)}"
    else:
        relative = age(moment, now=now)
    return f"{format_time(moment)} ({relative})"


def _conditions(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    rank = {name: i for i, name in enumerate(_CONDITION_ORDER)}
    return sorted(found, key=lambda c: rank.get(str(c.get("type")), len(rank)))


def _event_time(event: Mapping[str, Any]) -> Any:
    return event.get("lastTimestamp") or event.get("eventTime") or (event.get("metadata") or {}).get(
        "creationTimestamp")


def describe(link: Mapping[str, Any], events: Sequence[Mapping[str, Any]], *, now: dt.datetime) -> str:
    """The detail view of one raw ExternalAuthLink and its events (oldest first)."""
    meta = link.get("metadata") or {}
    spec = link.get("spec") or {}
    status = link.get("status") or {}
    formats = spec.get("outputFormats") or []
    fields = [
        ("Link", f"{meta.get('namespace', '')}/{meta.get('name', '')}"),
        ("Provider", str(spec.get("providerName") or "-")),
        ("Secret", str(spec.get("secretName") or "-")),
        ("Account", str(status.get("account") or "-")),
        ("Expires", when(status.get("expiresAt"), now=now)),
        ("Refresh token expires", when(status.get("refreshTokenExpiresAt"), now=now)),
        ("Last refresh", when(status.get("lastRefreshTime"), now=now)),
        ("Next refresh", when(status.get("nextRefreshTime"), now=now)),
        ("Last validation", when(status.get("lastValidationTime"), now=now)),
        ("Output formats", ", ".join(str(f) for f in formats) if formats else "-"),
    ]
    if spec.get("suspend") is True:
        fields.append(("Suspended", "yes"))
    width = max(len(k) for k, _ in fields) + 2
    lines = [f"{(k + ':').ljust(width)}{printable(v)}" for k, v in fields]

    lines.append("Conditions:")
    conditions = _conditions(status)
    if conditions:
        rows = [[printable(str(c.get(k) or "-")) for k in ("type", "status", "reason")]
                + [age(_time(c.get("lastTransitionTime")), now=now),
                   printable(" ".join(str(c.get("message") or "").split())) or "-"]
                for c in conditions]
        lines += ["  " + r for r in render_table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows)
                  .splitlines()]
    else:
        lines.append("  (none yet: the operator has not looked at this link)")

    shown = list(events)[-LAST_EVENTS:]
    lines.append(f"Events (last {LAST_EVENTS}):" if shown else "Events: none")
    if shown:
        rows = [[age(_time(_event_time(e)), now=now), printable(str(e.get("type") or "-")),
                 printable(str(e.get("reason") or "-")),
                 (f"x{e.get('count')} " if isinstance(e.get("count"), int) and e["count"] > 1 else "")
                 + (printable(" ".join(str(e.get("message") or "").split())) or "-")]
                for e in shown]
        lines += ["  " + r for r in render_table(["AGE", "TYPE", "REASON", "MESSAGE"], rows).splitlines()]
    return "\n".join(lines) + "\n"
