"""What ``externalauth status`` shows, and how. Pure: no I/O, no clock (``now`` is passed in).

A link object (raw dict from the API) becomes a :class:`StatusRow`; rows become a
table (with optional ANSI colour) or JSON/YAML-ready dicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from externalauth.errors import InvalidInputError
from externalauth.model.durations import format_duration, parse_time

# metadata.name of a custom resource or a Secret: a DNS-1123 subdomain.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# a namespace: a DNS-1123 label.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

GREEN, RED, YELLOW, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"
_READY_COLOURS = {"True": GREEN, "False": RED, "Unknown": YELLOW}

# What a terminal would act on instead of showing: C0 and C1 controls (ESC starts ANSI
# CSI and OSC sequences), DEL, line/paragraph separators and bidirectional overrides.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``, ``\\u202e``), for
    printing provider-supplied or stored text (account names, messages, URLs, codes)."""
    def escape(match: re.Match[str]) -> str:
        ch = match.group()
        if ch in _NAMED:
            return _NAMED[ch]
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    return _UNPRINTABLE.sub(escape, str(text))


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid object name, else :class:`InvalidInputError`."""
    if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        raise InvalidInputError(
            f"{kind} name {name[:80]!r} is invalid: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (at most 253 characters)"
        )
    return name


def check_namespace(name: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not _LABEL.match(name):
        raise InvalidInputError(
            f"namespace {name[:80]!r} is invalid: use lower-case letters, digits and '-' "
            "(at most 63 characters)"
        )
    return name


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except InvalidInputError:
        return None


def expires_in(expires_at: dt.datetime | None, *, now: dt.datetime) -> str:
    """``7h59m`` for a future expiry, ``expired`` for a past one, ``-`` if unknown."""
    if expires_at is None:
        return "-"
    left = expires_at - now
    if left.total_seconds() <= 0:
        return "expired"
    return format_duration(left)


def age(moment: dt.datetime | None, *, now: dt.datetime) -> str:
    """``3m ago`` (or ``just now``) for a past moment, ``never`` if unknown."""
    if moment is None:
        return "never"
    passed = now - moment
    if passed.total_seconds() < 1:
        return "just now"
    return f"{format_duration(passed)} ago"


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return None


@dataclasses.dataclass(frozen=True)
class StatusRow:
    namespace: str
    name: str
    provider: str
    ready: str
    account: str
    expires_at: dt.datetime | None
    last_refresh: dt.datetime | None
    reason: str
    message: str
    secret: str = ""
    next_refresh: dt.datetime | None = None


def row_for(link: Mapping[str, Any]) -> StatusRow:
    """One row from a raw ExternalAuthLink. The reason is Ready's, unless the link is
    Ready but cannot be refreshed (then Refreshable's says what will go wrong next)."""
    meta = link.get("metadata") or {}
    spec = link.get("spec") or {}
    status = link.get("status") or {}
    ready = condition(status, "Ready")
    refreshable = condition(status, "Refreshable")
    shown = ready
    if ready is not None and ready.get("status") == "True" and refreshable is not None \
            and refreshable.get("status") == "False":
        shown = refreshable
    return StatusRow(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        provider=str(spec.get("providerName") or ""),
        ready=str(ready.get("status")) if ready is not None else "Unknown",
        account=str(status.get("account") or ""),
        expires_at=_time(status.get("expiresAt")),
        last_refresh=_time(status.get("lastRefreshTime")),
        reason=str(shown.get("reason") or "") if shown is not None else "",
        message=str(shown.get("message") or "") if shown is not None else "",
        secret=str(spec.get("secretName") or ""),
        next_refresh=_time(status.get("nextRefreshTime")),
    )


def sort_rows(rows: Iterable[StatusRow]) -> list[StatusRow]:
    return sorted(rows, key=lambda r: (r.namespace, r.name))


def headers(*, all_namespaces: bool, wide: bool = False) -> list[str]:
    cols = ["LINK", "PROVIDER", "READY", "ACCOUNT", "EXPIRES IN", "LAST REFRESH", "REASON"]
    if wide:
        cols += ["SECRET", "NEXT REFRESH", "MESSAGE"]
    return ["NAMESPACE", *cols] if all_namespaces else cols


def _until(moment: dt.datetime | None, *, now: dt.datetime) -> str:
    if moment is None:
        return "-"
    left = moment - now
    return "now" if left.total_seconds() <= 0 else f"in {format_duration(left)}"


def cells(row: StatusRow, *, now: dt.datetime, all_namespaces: bool, wide: bool = False) -> list[str]:
    """The table cells of one row, control characters escaped (account names come from the provider)."""
    values = [
        row.name,
        row.provider or "-",
        row.ready,
        row.account or "-",
        expires_in(row.expires_at, now=now),
        age(row.last_refresh, now=now),
        row.reason or "-",
    ]
    if wide:
        values += [row.secret or "-", _until(row.next_refresh, now=now), " ".join(row.message.split()) or "-"]
    return [printable(v) for v in ([row.namespace, *values] if all_namespaces else values)]


def render_table(header: Sequence[str], body: Sequence[Sequence[str]], *,
                 colour_column: int | None = None, colour: bool = False, show_header: bool = True) -> str:
    """Left-aligned columns separated by three spaces, like kubectl. ANSI colour (on
    ``colour_column``, by value True/False/Unknown) is added after padding so that
    it never breaks the alignment."""
    widths = [len(h) for h in header]
    for line in body:
        for i, cell in enumerate(line):
            widths[i] = max(widths[i], len(cell))
    out = []
    for n, line in enumerate([list(header), *[list(b) for b in body]]):
        if n == 0 and not show_header:
            continue
        parts = []
        for i, cell in enumerate(line):
            last = i == len(line) - 1
            text = cell if last else cell.ljust(widths[i])
            if colour and n > 0 and i == colour_column and cell in _READY_COLOURS:
                text = f"{_READY_COLOURS[cell]}{cell}{RESET}" + ("" if last else " " * (widths[i] - len(cell)))
            parts.append(text)
        out.append("   ".join(parts).rstrip())
    return "\n".join(out) + "\n"


def table(rows: Sequence[StatusRow], *, now: dt.datetime, all_namespaces: bool,
          colour: bool = False, wide: bool = False, show_header: bool = True) -> str:
    head = headers(all_namespaces=all_namespaces, wide=wide)
    body = [cells(r, now=now, all_namespaces=all_namespaces, wide=wide) for r in sort_rows(rows)]
    return render_table(head, body, colour_column=head.index("READY"), colour=colour, show_header=show_header)


# --- -o: how kubectl prints objects ---------------------------------------------------------
class Output(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    NAME = "name"
    JSON = "json"
    YAML = "yaml"
    JSONPATH = "jsonpath"


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """``-o``: the format, and for ``jsonpath=TEMPLATE`` the template."""

    kind: Output
    template: str = ""

    @property
    def tabular(self) -> bool:
        return self.kind in (Output.TABLE, Output.WIDE)


OUTPUT_CHOICES = ("table", "wide", "name", "json", "yaml", "jsonpath=")


def parse_output(text: str) -> OutputSpec:
    """``-o table|wide|name|json|yaml|jsonpath=TEMPLATE`` (kubectl's ``jsonpath='{...}'`` too)."""
    kind, eq, template = text.partition("=")
    if kind == Output.JSONPATH and eq:
        if not template:
            raise InvalidInputError("-o jsonpath= needs a template, e.g. jsonpath='{.items[*].metadata.name}'")
        from externalauth.cli import jsonpath

        jsonpath.parse(template)  # a malformed template is a usage error, before the cluster is asked
        return OutputSpec(Output.JSONPATH, template)
    if not eq and kind in {o.value for o in Output} - {Output.JSONPATH}:
        return OutputSpec(Output(kind))
    raise InvalidInputError(f"invalid choice: {text[:60]!r} (choose from table, wide, name, json, yaml, "
                            "jsonpath=TEMPLATE)")


LINK_RESOURCE = "externalauthlink.externalauth.io"
API_VERSION = "externalauth.io/v1alpha1"
KIND = "ExternalAuthLink"


def as_object(link: Mapping[str, Any]) -> dict[str, Any]:
    """A link as ``kubectl get -o json`` prints it: with apiVersion and kind, without
    ``metadata.managedFields`` (kubectl's ``--show-managed-fields=false``, its default)."""
    obj = {"apiVersion": API_VERSION, "kind": KIND, **dict(link)}
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    obj["metadata"] = meta
    return obj


def as_list(links: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several links as kubectl prints a listing: a ``v1`` ``List`` with ``items``."""
    ordered = sorted(links, key=lambda o: ((o.get("metadata") or {}).get("namespace") or "",
                                           (o.get("metadata") or {}).get("name") or ""))
    return {"apiVersion": "v1", "kind": "List", "items": [as_object(o) for o in ordered],
            "metadata": {"resourceVersion": ""}}


def object_name(link: Mapping[str, Any]) -> str:
    """``-o name``: ``externalauthlink.externalauth.io/NAME``."""
    return f"{LINK_RESOURCE}/{printable(str((link.get('metadata') or {}).get('name') or ''))}"


def refresh_outcome(status: Mapping[str, Any]) -> tuple[bool, str]:
    """After the operator acted on a refresh request: (succeeded, what to print, escaped).

    Success is ``Refreshable=True``; a link with no Refreshable verdict succeeds if it
    is ``Ready=True``. Otherwise the most telling condition's reason and message.
    """
    ok, what = _refresh_outcome(status)
    return ok, printable(what)


def _refresh_outcome(status: Mapping[str, Any]) -> tuple[bool, str]:
    ready = condition(status, "Ready")
    refreshable = condition(status, "Refreshable")
    if refreshable is not None and refreshable.get("status") == "True":
        return True, f"Refreshable: {refreshable.get('reason') or 'True'}"
    if (refreshable is None or refreshable.get("status") == "Unknown") and ready is not None \
            and ready.get("status") == "True":
        return True, f"Ready: {ready.get('reason') or 'True'}"
    failed = ready if ready is not None and ready.get("status") == "False" else refreshable
    if failed is None:
        return False, "the link has no Ready or Refreshable condition"
    reason = failed.get("reason") or "Unknown"
    message = str(failed.get("message") or "").strip()
    return False, f"{failed.get('type')}={failed.get('status')} {reason}" + (f": {message}" if message else "")


def login_instructions(*, provider: str, host: str, verification_uri: str, user_code: str,
                       verification_uri_complete: str | None, expires_in: int, hint: bool) -> str:
    """What ``externalauth login`` prints before it waits. The URL and the code come from the
    provider: control characters in them are escaped, never sent to the terminal."""
    lines = [
        f"To sign in to {printable(provider)} ({printable(host)}), open {printable(verification_uri)}",
        f"and enter the code: {printable(user_code)}",
    ]
    if hint:
        if verification_uri_complete:
            lines.append(f"(or open {printable(verification_uri_complete)} to skip typing the code)")
        lines.append("Use a browser on any device; this command waits until you approve "
                     f"(the code expires in {expires_in // 60 or 1} min).")
    return "\n".join(lines) + "\n"
