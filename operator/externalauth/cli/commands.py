"""The workspace-facing commands besides ``login``: ``refresh`` and ``status``.

Each command is a thin sequence gather → decide (pure helpers in
:mod:`externalauth.cli.formatting`, :mod:`externalauth.cli.describing`,
:mod:`externalauth.cli.exits`) → act. Waiting is done on watches of the link, never by
polling. A token never reaches the terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import yaml

from externalauth.cli import describing, exits, formatting, jsonpath, kubeflags, namespaces
from externalauth.errors import NotFoundError
from externalauth.kube.api import Kube, WatchExpired
from externalauth.model.durations import format_duration
from externalauth.model.names import REFRESH_ANNOTATION

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: a watched view redrawn in place on a terminal


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _colour_wanted(stream: TextIO) -> bool:
    return not os.environ.get("NO_COLOR") and _tty(stream)


def _name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _rv(obj: dict[str, Any], default: str) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or default)


# --- watching ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Change:
    """One step of :func:`follow`: a watch event on one link, or (``LISTED``, after the watch
    fell too far behind) the whole list again."""

    kind: str  # ADDED, MODIFIED, DELETED or LISTED
    link: dict[str, Any] | None = None
    listed: tuple[dict[str, Any], ...] = ()


def follow(cluster: Kube, namespace: str | None, *, name: str | None, resource_version: str,
           until: float | None, clock: Callable[[], float] = time.monotonic) -> Iterator[Change]:
    """Changes after ``resource_version`` until ``until`` (monotonic; None: forever), watching
    again whenever the API server ends a watch, listing again after a 410 Gone."""
    rv = resource_version
    while until is None or clock() < until:
        seconds = 300 if until is None else math.ceil(until - clock())
        try:
            for kind, obj in cluster.watch_links(namespace, name=name, resource_version=rv, seconds=seconds):
                rv = _rv(obj, rv)
                yield Change(kind, obj)
        except WatchExpired:
            items, rv = cluster.list_links(namespace, name=name)
            yield Change("LISTED", listed=tuple(items))


# --- refresh -----------------------------------------------------------------------------------
def new_request_value(now: dt.datetime) -> str:
    """A fresh annotation value: an RFC 3339 time with microseconds plus a short nonce."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def refresh_command(args: argparse.Namespace) -> int:
    cluster = namespaces.connect(kubeflags.from_args(args))
    ns, name = namespaces.of_command(cluster, args.namespace), args.link
    value = new_request_value(_now())
    try:
        patched = cluster.patch_link(ns, name, {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}})
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthLink {ns}/{name} not found") from None
    if not args.wait:
        print(f"Refresh of ExternalAuthLink {ns}/{name} requested.", flush=True)
        return 0
    print(f"Refresh of ExternalAuthLink {ns}/{name} requested; waiting for the operator "
          f"(up to {format_duration(args.timeout)})", file=sys.stderr, flush=True)
    status = _wait_for_request(cluster, ns, name, value=value, link=patched,
                               until=time.monotonic() + args.timeout.total_seconds())
    if status is None:
        raise exits.TimedOut(
            f"timed out after {format_duration(args.timeout)} waiting for the operator to act on the refresh "
            f"of {ns}/{name} (is the operator running and serving this namespace?)")
    ok, what = formatting.refresh_outcome(status)
    if not ok:
        code = exits.ExitCode.SIGN_IN_AGAIN if exits.needs_sign_in(status) else exits.ExitCode.FAILED
        hint = f" (sign in again: externalauth login {_provider_of(patched)} -n {ns} --link {name})" \
            if code is exits.ExitCode.SIGN_IN_AGAIN else ""
        raise exits.CommandError(f"refresh of ExternalAuthLink {ns}/{name} failed: {what}{hint}", code=code)
    print(f"ExternalAuthLink {ns}/{name} refreshed ({what}).", flush=True)
    return 0


def _the_link(change: Change) -> dict[str, Any] | None:
    """The one watched link after ``change``; None when it is gone."""
    if change.kind == "LISTED":
        return change.listed[0] if change.listed else None
    return None if change.kind == "DELETED" else change.link


def _provider_of(link: dict[str, Any]) -> str:
    return formatting.printable(str((link.get("spec") or {}).get("providerName") or "PROVIDER"))


def _wait_for_request(cluster: Kube, ns: str, name: str, *, value: str, link: dict[str, Any],
                      until: float) -> dict[str, Any] | None:
    """The link's status once the operator echoed ``value`` (None when ``until`` passed),
    learnt from a watch that starts at the annotation write itself: nothing is missed."""
    for change in follow(cluster, ns, name=name, resource_version=_rv(link, ""), until=until):
        obj = _the_link(change)
        if obj is None:
            raise NotFoundError(f"ExternalAuthLink {ns}/{name} was deleted while waiting")
        status: dict[str, Any] = obj.get("status") or {}
        if status.get("lastRefreshRequest") == value:
            return status
    return None


# --- status --------------------------------------------------------------------------------------
def status_command(args: argparse.Namespace) -> int:
    if args.all_namespaces and args.namespace:
        raise exits.CommandError("-n/--namespace is not allowed with -A/--all-namespaces",
                                 code=exits.ExitCode.USAGE)
    cluster = namespaces.connect(kubeflags.from_args(args))
    show = _Shower(output=args.output, headers=not args.no_headers, watch=args.watch, out=sys.stdout)
    if args.link is not None:
        if args.all_namespaces:
            raise exits.CommandError("status LINK shows one link: give its namespace with -n, not -A",
                                     code=exits.ExitCode.USAGE)
        return _one(cluster, namespaces.of_command(cluster, args.namespace), args.link, show=show)
    namespace = None if args.all_namespaces else namespaces.of_command(cluster, args.namespace)
    return _many(cluster, namespace, show=show)


@dataclasses.dataclass
class _Shower:
    """Prints what ``status`` shows, in the ``-o`` format. A watched table is redrawn in
    place on a terminal; other formats print each changed object after the first answer,
    as ``kubectl get -w -o ...`` does."""

    output: formatting.OutputSpec
    headers: bool
    watch: bool
    out: TextIO
    printed: int = 0

    def write(self, text: str) -> None:
        if self.watch and self.printed and self.output.tabular:
            self.out.write(_CLEAR if _tty(self.out) else "\n")
        elif self.printed and self.output.kind is formatting.Output.YAML:
            self.out.write("---\n")
        self.out.write(text)
        self.out.flush()
        self.printed += 1

    def objects(self, value: Any) -> str:
        """``value`` (one object, or a List) as json, yaml, name or jsonpath."""
        kind = self.output.kind
        if kind is formatting.Output.JSON:
            return json.dumps(value, indent=4) + "\n"
        if kind is formatting.Output.YAML:
            return str(yaml.safe_dump(value, sort_keys=False))
        if kind is formatting.Output.JSONPATH:
            return jsonpath.render(self.output.template, value, escape=formatting.printable)
        items = value.get("items") if value.get("kind") == "List" else [value]
        return "".join(formatting.object_name(i) + "\n" for i in items)


def _one(cluster: Kube, ns: str, name: str, *, show: _Shower) -> int:
    items, rv = cluster.list_links(ns, name=name)
    if not items:
        raise NotFoundError(f"ExternalAuthLink {ns}/{name} not found")
    link = items[0]

    def print_link() -> None:
        if show.output.tabular:
            show.write(describing.describe(link, cluster.link_events(ns, name), now=_now()))
        else:
            show.write(show.objects(formatting.as_object(link)))

    print_link()
    if show.watch:
        for change in follow(cluster, ns, name=name, resource_version=rv, until=None):
            current = _the_link(change)
            if current is None:
                raise NotFoundError(f"ExternalAuthLink {ns}/{name} was deleted")
            link = current
            print_link()
    return exits.code_for_link(link.get("status") or {})


def _many(cluster: Kube, namespace: str | None, *, show: _Shower) -> int:
    items, rv = cluster.list_links(namespace)
    links = {_name(i): i for i in items}
    where = "any namespace" if namespace is None else f"namespace {namespace}"

    def print_table() -> None:
        rows = [formatting.row_for(item) for item in links.values()]
        if not rows:
            if not show.printed or show.watch:
                print(f"No ExternalAuthLinks in {where}.", file=sys.stderr, flush=True)
            return
        show.write(formatting.table(rows, now=_now(), all_namespaces=namespace is None,
                                    colour=_colour_wanted(show.out), wide=show.output.kind is formatting.Output.WIDE,
                                    show_header=show.headers))

    if show.output.tabular:
        print_table()
    elif not show.watch:
        show.write(show.objects(formatting.as_list(links.values())))
    else:
        for link in formatting.as_list(links.values())["items"]:
            show.write(show.objects(link))
    if show.watch:
        for change in follow(cluster, namespace, name=None, resource_version=rv, until=None):
            if change.kind == "LISTED":
                links = {_name(i): i for i in change.listed}
            elif change.link is not None and change.kind == "DELETED":
                links.pop(_name(change.link), None)
            elif change.link is not None:
                links[_name(change.link)] = change.link
            if show.output.tabular:
                print_table()
            elif change.link is not None:
                show.write(show.objects(formatting.as_object(change.link)))
            else:
                show.write(show.objects(formatting.as_list(links.values())))
    return 0
