"""The workspace-facing commands: ``login``, ``refresh``, ``status``.

Each command is a thin sequence gather → decide (pure helpers in
:mod:`externalauth.cli.plans` and :mod:`externalauth.cli.formatting`) → act.
Every failure ends as one ``externalauth: error: ...`` line on stderr and a
non-zero exit; a token never reaches the terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import yaml

from externalauth.cli import formatting, plans
from externalauth.cli.calling import Cluster
from externalauth.errors import (
    ConflictError,
    ExternalAuthError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
)
from externalauth.model import tokens as tokmod
from externalauth.model.durations import format_duration, parse_duration
from externalauth.model.names import REFRESH_ANNOTATION
from externalauth.model.specs import parse_provider

EXIT_FAILED = 1
Command = Callable[[argparse.Namespace], int]


# --- argument types --------------------------------------------------------------
def _timeout(text: str) -> dt.timedelta:
    try:
        value = parse_duration(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0s")
    return value


def _name(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            return formatting.check_name(kind, text)
        except InvalidInputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    check.__name__ = f"{kind} name"
    return check


def _namespace(text: str) -> str:
    try:
        return formatting.check_namespace(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _error(message: str) -> int:
    first = formatting.printable(" ".join(str(message).split())) or "failed"
    print(f"externalauth: error: {first}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def guarded(func: Command) -> Command:
    """The command boundary: known errors print their (safe) message, anything else
    only its type. Never a traceback, never a token."""
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except KeyboardInterrupt:
            print("\nexternalauth: interrupted", file=sys.stderr)
            return 130
        except ExternalAuthError as e:
            return _error(str(e))
        except BrokenPipeError:
            return EXIT_FAILED
        except Exception as e:
            return _error(f"unexpected {type(e).__name__} (this is a bug in externalauth; "
                          "please report it with the command you ran)")
    return wrapper


def register(sub: Any) -> None:
    """Add ``login``, ``refresh`` and ``status`` to the ``externalauth`` parser."""
    from externalauth.cli.main import add_kube_flags

    login = sub.add_parser(
        "login", help="sign in at a provider (device flow) and write the token Secret and link",
        description="Sign in at PROVIDER with the OAuth 2.0 device flow (RFC 8628), then write "
                    "the token Secret and the ExternalAuthLink that keeps it fresh. Re-running "
                    "re-authenticates the same link.",
    )
    login.add_argument("provider", metavar="PROVIDER", type=_name("provider"),
                       help="name of the ExternalAuthProvider (kubectl get eap)")
    login.add_argument("-n", "--namespace", required=True, type=_namespace, metavar="NS",
                       help="namespace of the link and the Secret")
    login.add_argument("--link", required=True, type=_name("link"), metavar="NAME",
                       help="name of the ExternalAuthLink to create or update")
    login.add_argument("--secret", type=_name("secret"), metavar="NAME",
                       help="name of the token Secret (default: <link>-token)")
    login.add_argument("--force", action="store_true",
                       help="write the token into an existing Secret that is not a token Secret")
    login.add_argument("--no-browser-hint", action="store_true",
                       help="print only the URL and the code, no advice on opening a browser")
    add_kube_flags(login)
    login.set_defaults(func=guarded(login_command))

    refresh = sub.add_parser(
        "refresh", help="ask the operator to refresh a link's token now",
        description="Set the externalauth.io/refresh-requested annotation on LINK to a new "
                    "value: the operator refreshes the token once, even if it is not due.",
    )
    refresh.add_argument("link", metavar="LINK", type=_name("link"), help="the ExternalAuthLink")
    refresh.add_argument("-n", "--namespace", required=True, type=_namespace, metavar="NS",
                         help="namespace of the link")
    refresh.add_argument("--wait", action="store_true",
                         help="wait until the operator acted on the request; non-zero if it failed")
    refresh.add_argument("--timeout", type=_timeout, default=dt.timedelta(seconds=60),
                         metavar="DURATION", help="how long --wait waits (default 60s)")
    add_kube_flags(refresh)
    refresh.set_defaults(func=guarded(refresh_command))

    status = sub.add_parser(
        "status", help="show the links and their tokens' health",
        description="A table of ExternalAuthLinks: provider, readiness, account, when the "
                    "token expires, when it was last refreshed, and why not ready.",
    )
    scope = status.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", type=_namespace, metavar="NS",
                       help="namespace to show (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="show every namespace")
    status.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="output format (default table)")
    add_kube_flags(status)
    status.set_defaults(func=guarded(status_command))


# --- login -----------------------------------------------------------------------
def _write_secret(cluster: Cluster, *, namespace: str, name: str, provider_name: str,
                  tokens: tokmod.TokenSet, force: bool) -> str:
    data = tokmod.render_token_keys(tokens)
    for _ in range(5):
        existing = cluster.get_secret(namespace, name)
        plan = plans.plan_secret(existing, namespace=namespace, name=name, provider=provider_name,
                                 token_data=data, force=force)
        try:
            if plan.write is plans.Write.CREATE:
                cluster.create_secret(namespace, plan.body)
                return "created"
            if plan.write is plans.Write.PATCH:
                cluster.patch_secret(namespace, name, plan.body)
                return "updated"
            assert existing is not None
            cluster.delete_secret(namespace, name, uid=(existing.get("metadata") or {}).get("uid"))
            cluster.create_secret(namespace, plan.body)
            return "replaced"
        except (ConflictError, NotFoundError):
            continue  # someone else wrote it meanwhile: look again
    raise PermanentError(f"Secret {namespace}/{name} kept changing while writing it; try again")


def _write_link(cluster: Cluster, *, namespace: str, name: str, provider: str, secret: str) -> str:
    for _ in range(3):
        try:
            cluster.get_link(namespace, name)
        except NotFoundError:
            try:
                cluster.create_link(namespace, plans.link_body(
                    namespace=namespace, name=name, provider=provider, secret=secret))
                return "created"
            except ConflictError:
                continue
        cluster.patch_link(namespace, name, plans.link_patch(provider=provider, secret=secret))
        return "updated"
    raise PermanentError(f"ExternalAuthLink {namespace}/{name} kept changing; try again")


def login_command(args: argparse.Namespace, *, out: TextIO | None = None,
                  err: TextIO | None = None) -> int:
    from externalauth.oauth.device import DeviceFlow

    out = out or sys.stdout
    err = err or sys.stderr
    ns, link = args.namespace, args.link
    secret_name = args.secret or f"{link}-token"
    formatting.check_name("secret", secret_name)
    cluster = Cluster.open(kubeconfig=args.kubeconfig, context=args.context)

    try:
        raw = cluster.get_provider(args.provider)
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthProvider {args.provider} not found "
                            "(kubectl get externalauthproviders lists them)") from None
    try:
        provider = parse_provider(args.provider, raw.get("spec"))
    except InvalidInputError as e:
        raise InvalidInputError(f"ExternalAuthProvider {args.provider} is invalid: {e}") from None

    # Fail before the user types a code, not after.
    existing = cluster.get_secret(ns, secret_name)
    if existing is not None and not args.force and not plans.is_token_secret(existing):
        plans.plan_secret(existing, namespace=ns, name=secret_name, provider=provider.name, token_data={},
                          force=False)

    flow = DeviceFlow(provider)  # a public-client flow: login never reads the client secret
    auth = flow.start()
    out.write(formatting.login_instructions(
        provider=provider.name, host=provider.host, verification_uri=auth.verification_uri,
        user_code=auth.user_code, verification_uri_complete=auth.verification_uri_complete,
        expires_in=auth.expires_in, hint=not args.no_browser_hint))
    out.flush()
    print("Waiting for approval", end="", file=err, flush=True)

    def dot() -> None:
        print(".", end="", file=err, flush=True)

    try:
        tokens = flow.wait(auth, on_poll=dot)
    finally:
        print("", file=err, flush=True)

    how_secret = _write_secret(cluster, namespace=ns, name=secret_name, provider_name=provider.name,
                               tokens=tokens, force=args.force)
    how_link = _write_link(cluster, namespace=ns, name=link, provider=provider.name,
                           secret=secret_name)
    print(f"Secret {ns}/{secret_name} {how_secret}; ExternalAuthLink {ns}/{link} {how_link}.",
          file=out, flush=True)
    return 0


# --- refresh ---------------------------------------------------------------------
def new_request_value(now: dt.datetime) -> str:
    """A fresh annotation value: an RFC 3339 time with microseconds plus a short nonce."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def refresh_command(args: argparse.Namespace) -> int:
    ns, name = args.namespace, args.link
    cluster = Cluster.open(kubeconfig=args.kubeconfig, context=args.context)
    try:
        cluster.get_link(ns, name)
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthLink {ns}/{name} not found") from None
    value = new_request_value(dt.datetime.now(dt.UTC))
    cluster.patch_link(ns, name, {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}})
    if not args.wait:
        print(f"Refresh of ExternalAuthLink {ns}/{name} requested.", flush=True)
        return 0
    print(f"Refresh of ExternalAuthLink {ns}/{name} requested; waiting", end="",
          file=sys.stderr, flush=True)
    timeout = args.timeout.total_seconds()
    deadline = time.monotonic() + timeout
    next_dot = time.monotonic() + 1.0
    try:
        while True:
            try:
                obj = cluster.get_link(ns, name)
            except NotFoundError:
                raise NotFoundError(f"ExternalAuthLink {ns}/{name} was deleted while waiting") from None
            status = obj.get("status") or {}
            if status.get("lastRefreshRequest") == value:
                break
            if time.monotonic() > deadline:
                raise PermanentError(
                    f"timed out after {format_duration(args.timeout)} waiting for the "
                    f"operator to act on the refresh of {ns}/{name} (is the operator running "
                    "and serving this namespace?)")
            if time.monotonic() >= next_dot:
                print(".", end="", file=sys.stderr, flush=True)
                next_dot += 1.0
            time.sleep(0.2)
    finally:
        print("", file=sys.stderr, flush=True)
    ok, what = formatting.refresh_outcome(status)
    if not ok:
        return _error(f"refresh of ExternalAuthLink {ns}/{name} failed: {what}")
    print(f"ExternalAuthLink {ns}/{name} refreshed ({what}).", flush=True)
    return 0


# --- status ----------------------------------------------------------------------
def _colour_wanted(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def status_command(args: argparse.Namespace) -> int:
    cluster = Cluster.open(kubeconfig=args.kubeconfig, context=args.context)
    namespace = None if args.all_namespaces else (args.namespace or cluster.default_namespace)
    rows = [formatting.row_for(item) for item in cluster.list_links(namespace)]
    now = dt.datetime.now(dt.UTC)
    if args.output == "json":
        print(json.dumps(formatting.as_dicts(rows, now=now), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(formatting.as_dicts(rows, now=now), sort_keys=False), end="")
    elif not rows:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No ExternalAuthLinks in {where}.", file=sys.stderr)
    else:
        sys.stdout.write(formatting.table(rows, now=now, all_namespaces=namespace is None,
                                          colour=_colour_wanted(sys.stdout)))
    sys.stdout.flush()
    return 0
