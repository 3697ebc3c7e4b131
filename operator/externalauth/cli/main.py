"""``externalauth``: run the operator, sign users in, force refreshes, show status.

Every command prints a one-line error and exits non-zero on bad input; never a traceback.
The exit codes are :mod:`externalauth.cli.exits`.

Start-up is kept short (the command runs in workspace images, often several times a
minute from scripts): building the parser imports only the standard library and pure
modules; a command's own module (and urllib3, yaml, ``kopf``...) is imported
only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence

from externalauth import __version__
from externalauth.cli import exits
from externalauth.errors import ExternalAuthError, InvalidInputError

PROG = "externalauth"
DESCRIPTION = "Sign in at OAuth2 providers, refresh and inspect the tokens the operator keeps fresh, run the operator."
KUBECTL_PROG = "kubectl externalauth"
EXIT_USAGE = exits.ExitCode.USAGE
EXIT_FAILED = exits.ExitCode.FAILED
COMPLETE = "__complete"
OPERATOR_EXTRA = "pip install 'externalauth-operator[operator]'"


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil`` (whose import, with lzma and bz2, would
    cost more than the rest of ``--version``): $COLUMNS, else the terminal, else 80. The
    exit-code table (the epilog) is printed as written; descriptions are wrapped."""

    def __init__(self, prog: str) -> None:
        import os

        try:
            columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(1).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
        super().__init__(prog, width=max(columns, 40) - 2)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text == exits.EPILOG:
            return text
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


# --- argument types (pure; what they need is imported when they run) ------------------------
def _duration(text: str) -> object:
    from externalauth.model.durations import parse_duration

    try:
        return parse_duration(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timeout(text: str) -> object:
    value = _duration(text)
    if value.total_seconds() <= 0:  # type: ignore[attr-defined]
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0s")
    return value


def _namespace(text: str) -> str:
    from externalauth.cli import formatting

    try:
        return formatting.check_namespace(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shard(text: str) -> object:
    from externalauth.policy import sharding

    try:
        return sharding.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _name(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        from externalauth.cli import formatting

        try:
            return formatting.check_name(kind, text)
        except InvalidInputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    check.__name__ = f"{kind} name"
    return check


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _bind_address(text: str) -> tuple[str, int | None]:
    try:
        from externalauth.metrics import parse_bind_address
    except ImportError:
        raise argparse.ArgumentTypeError(f"the operator's dependencies are not installed: {OPERATOR_EXTRA}") from None
    try:
        return parse_bind_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _output(text: str) -> object:
    from externalauth.cli import formatting

    try:
        return formatting.parse_output(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _OutputChoices:
    """``status -o``: any parsed value is a choice (:func:`_output` refused the others); the
    listed ones are what completion offers."""

    def __contains__(self, value: object) -> bool:
        return not isinstance(value, str)

    def __iter__(self) -> Iterator[str]:
        return iter(("table", "wide", "name", "json", "yaml", "jsonpath="))


class _OutputFormats:
    """The ``--output-format`` choices, read from the model's enum only when argparse looks
    (a bad value, ``--help``, completion): not on every start."""

    def _values(self) -> list[str]:
        from externalauth.model.formats import OutputFormat

        return [f.value for f in OutputFormat]

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())


def _request_timeout(text: str) -> float:
    from externalauth.cli.kubeflags import parse_request_timeout

    try:
        return parse_request_timeout(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_NAMESPACE_HELP = ("namespace of the link (default: the kubeconfig context's namespace; in a pod, the pod's "
                   "namespace; else default)")
KUBE_FLAGS_TITLE = "Kubernetes flags (before or after the command)"


def add_kube_flags(p: argparse.ArgumentParser, *, after: bool, namespace: bool = True,
                   identity: bool = True) -> None:
    """The flags kubectl users give anywhere on the line. On the top-level parser they default
    to None; after a command (``after``) they default to *not set*, so that a value given before
    the command is not overwritten by the command's default (argparse copies a subcommand's
    values over the top level's)."""
    default = argparse.SUPPRESS if after else None
    g = p.add_argument_group(KUBE_FLAGS_TITLE)
    g.add_argument("--kubeconfig", default=default, metavar="PATH",
                   help="path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)")
    g.add_argument("--context", default=default, metavar="NAME", help="the kubeconfig context to use")
    if namespace:
        g.add_argument("-n", "--namespace", type=_namespace, default=default, metavar="NS", help=_NAMESPACE_HELP)
    if not identity:  # `run`: the operator's own client takes only where to connect
        return
    g.add_argument("--request-timeout", type=_request_timeout, default=default, metavar="DURATION",
                   help="how long one API request may take, as kubectl: 30s, 1m, a number of seconds; "
                        "0 for no limit (default 15s)")
    g.add_argument("--as", dest="as_user", default=default, metavar="USER",
                   help="act as this user (impersonation; needs the impersonate permission)")
    g.add_argument("--as-group", dest="as_groups_after" if after else "as_groups", action="append",
                   default=default, metavar="GROUP", help="act as a member of this group (repeatable; with --as)")


# --- the parser ----------------------------------------------------------------------------
def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=DESCRIPTION, epilog=exits.EPILOG,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"externalauth {__version__}")
    add_kube_flags(parser, after=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, handler: str, *, help: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description, epilog=exits.EPILOG,
                                                    formatter_class=_Formatter)
        p.set_defaults(handler=handler)
        return p

    _add_login(command("login", "externalauth.cli.signin:login_command",
                       help="sign in at a provider and write the token Secret and the link",
                       description="Sign in at PROVIDER, then write the token Secret and the ExternalAuthLink "
                                   "that keeps it fresh. With the provider's device endpoint: the device flow "
                                   "(RFC 8628, a code to enter on any device); without one: authorization code "
                                   "+ PKCE in a browser on this machine (RFC 8252 loopback redirect). Re-running "
                                   "re-authenticates the same link. Never needs the client secret."))
    _add_refresh(command("refresh", "externalauth.cli.commands:refresh_command",
                         help="ask the operator to refresh a link's token now",
                         description="Set the externalauth.io/refresh-requested annotation on LINK to a new "
                                     "value: the operator refreshes the token once, even if it is not due."))
    _add_status(command("status", "externalauth.cli.commands:status_command",
                        help="show the links and their tokens' health",
                        description="A table of ExternalAuthLinks (provider, readiness, account, expiry, last "
                                    "refresh, why not ready), or one LINK in detail with its conditions and last "
                                    "events. -w watches and prints again on every change."))
    token = command("token", "externalauth.cli.token:token_command",
                    help="print a link's current access token (for scripts)",
                    description="Print LINK's current access token, read from the token Secret the link "
                                "names, and nothing else on stdout (like gh auth token): "
                                "git -c http.extraHeader=\"Authorization: Bearer $(externalauth token gh)\" ... "
                                "The Secret must carry the label externalauth.io/provider=<the link's "
                                "provider>. Needs get on the link and on the Secret.")
    token.add_argument("link", metavar="LINK", type=_name("link"), help="the ExternalAuthLink")
    add_kube_flags(token, after=True)
    logout = command("logout", "externalauth.cli.logout:logout_command",
                     help="unlink: revoke the grant, delete the link and the Secret login created",
                     description="Unlink LINK: the operator revokes the grant at the provider (spec.revokeOnDelete, "
                                 "then the link is deleted and this command waits for the Revoked or "
                                 "RevocationFailed event), then the token Secret that externalauth login created "
                                 "for the link is deleted (a Secret login did not create is kept). Non-zero when "
                                 "the grant was not revoked, with what to do by hand. Needs get, patch and delete "
                                 "on the link, list and watch on events, and delete on the Secret.")
    logout.add_argument("link", metavar="LINK", type=_name("link"), help="the ExternalAuthLink")
    logout.add_argument("--keep-secret", action="store_true", help="do not delete the token Secret")
    logout.add_argument("--timeout", type=_timeout, default="6m", metavar="DURATION",
                        help="how long to wait for the operator's revocation (default 6m: it tries for up to 5m)")
    add_kube_flags(logout, after=True)
    gitcred = command("git-credential", "externalauth.cli.gitcredential:command",
                      help="a git credential helper that answers from the mounted token Secret",
                      description="git's credential helper protocol (git-credential(1)) for workspaces: "
                                  "answers 'get' for the provider's host from the mounted token Secret's "
                                  "files, read at each call (access_token, expiry, and git-credentials, netrc "
                                  "or gh-hosts.yml for the host and user name); 'store' and 'erase' do "
                                  "nothing. No network, no Kubernetes credentials. Set it up with: git config "
                                  "--global credential.helper externalauth (the script "
                                  "git-credential-externalauth, which starts faster) or '!externalauth "
                                  "git-credential'.")
    gitcred.add_argument("action", metavar="ACTION", choices=("get", "store", "erase"),
                         help="get (answer), store or erase (do nothing)")
    gitcred.add_argument("--secret-dir", metavar="DIR",
                         help="where the token Secret is mounted (default: $EXTERNALAUTH_SECRET_DIR)")
    gitcred.add_argument("--host", metavar="HOST", help="answer for this host (default: from the format keys)")
    gitcred.add_argument("--username", metavar="USER",
                         help="git's user name (default: from the format keys, else oauth2)")
    completion = command("completion", "externalauth.cli.completion:completion_command",
                         help="print a shell completion script",
                         description="Print the completion script for SHELL. bash: source <(externalauth "
                                     "completion bash); zsh: source <(externalauth completion zsh); fish: "
                                     "externalauth completion fish | source. Names of providers and links are "
                                     "completed from the cluster.")
    completion.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "fish"), help="bash, zsh or fish")
    _add_run(command("run", "externalauth.cli.main:run_command", help="run the operator (kopf under the hood)",
                     description="Run the operator: watch ExternalAuthLinks and keep their tokens fresh."))
    return parser


def _add_login(login: argparse.ArgumentParser) -> None:
    login.add_argument("provider", metavar="PROVIDER", type=_name("provider"),
                       help="name of the ExternalAuthProvider (kubectl get eap)")
    login.add_argument("--link", type=_name("link"), metavar="NAME",
                       help="name of the ExternalAuthLink to create or update (default: PROVIDER)")
    login.add_argument("--secret", type=_name("secret"), metavar="NAME",
                       help="name of the token Secret (default: <link>-token)")
    login.add_argument("--output-format", action="append", default=[], dest="output_formats", metavar="F",
                       choices=_OutputFormats(),
                       help="add a ready-to-mount key to the Secret and to the link's spec.outputFormats "
                            "(repeatable: %(choices)s)")
    login.add_argument("--flow", choices=("auto", "device", "pkce"), default="auto",
                       help="device: RFC 8628 device code; pkce: a browser on this machine; auto (default): "
                            "device if the provider has a device endpoint, else pkce")
    login.add_argument("--no-browser", action="store_true",
                       help="pkce: print the URL instead of opening a browser (the default without a display)")
    login.add_argument("--timeout", type=_timeout, default=None, metavar="DURATION",
                       help="how long to wait for the sign-in (default: the device code's lifetime; 5m in a browser)")
    login.add_argument("--force", action="store_true",
                       help="write the token into an existing Secret that is not a token Secret")
    login.add_argument("--no-browser-hint", action="store_true",
                       help="device flow: print only the URL and the code, no advice on opening a browser")
    add_kube_flags(login, after=True)


def _add_refresh(refresh: argparse.ArgumentParser) -> None:
    refresh.add_argument("link", metavar="LINK", type=_name("link"), help="the ExternalAuthLink")
    refresh.add_argument("--wait", action="store_true",
                         help="wait (on a watch of the link) until the operator acted; non-zero if it failed")
    refresh.add_argument("--timeout", type=_timeout, default="60s", metavar="DURATION",
                         help="how long --wait waits (default 60s)")
    add_kube_flags(refresh, after=True)


def _add_status(status: argparse.ArgumentParser) -> None:
    status.add_argument("link", metavar="LINK", nargs="?", type=_name("link"),
                        help="show this link in detail (conditions, times, last events)")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="show every namespace (not with -n)")
    status.add_argument("-o", "--output", type=_output, choices=_OutputChoices(), default="table", metavar="FORMAT",
                        help="table (default), wide (more columns), name, json, yaml (the ExternalAuthLink "
                             "objects as kubectl prints them: a List, or the object for LINK), or "
                             "jsonpath=TEMPLATE (kubectl's, e.g. jsonpath='{.items[*].metadata.name}')")
    status.add_argument("--no-headers", action="store_true", help="table and wide: no header line")
    status.add_argument("-w", "--watch", action="store_true",
                        help="after the first answer, print again on every change (a watch, until Ctrl-C)")
    add_kube_flags(status, after=True)


def _add_run(run: argparse.ArgumentParser) -> None:
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces",
                       metavar="NS", help="serve this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="serve every namespace (the default when no -n is given)")
    peer = run.add_mutually_exclusive_group()
    peer.add_argument("--peering", metavar="NAME",
                      help="refused: kopf peering would pause only kopf's watch, not the engine's; "
                           "every replica is active (use --shard I/N to split the work)")
    peer.add_argument("--standalone", action="store_true",
                      help="no peering (the default); replicas stay safe through Secret claims")
    run.add_argument("--metrics-port", type=_port, default=None, metavar="P",
                     help="serve Prometheus metrics on this port (0 disables; default 8080)")
    run.add_argument("--metrics-bind-address", type=_bind_address, default=("127.0.0.1", None), metavar="A",
                     help="listen for metrics on this address: HOST, HOST:PORT or :PORT for every address "
                          "(default 127.0.0.1; in a cluster, :8080 behind a NetworkPolicy)")
    run.add_argument("--liveness-port", type=_port, default=None, metavar="P",
                     help="serve a liveness probe on /healthz at this port")
    run.add_argument("--operator-namespace", type=_namespace, default=None, metavar="NS",
                     help="the operator's own namespace, the only one client Secrets may live in "
                          "(default: the pod's namespace, else externalauth-system)")
    run.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                     help="serve only the namespaces of shard I of N (replica I of N replicas, "
                          "counting from 0); default: every namespace")
    run.add_argument("--revocation-timeout", type=_duration, default="5m", metavar="DURATION",
                     help="how long a deleted link with revokeOnDelete waits for its provider before its "
                          "finalizer goes without a revocation (default 5m)")
    run.add_argument("--validation-interval", type=_duration, default="1h",
                     metavar="DURATION", help="validate every token this often (default 1h)")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything (never tokens)")
    run.add_argument("--log-format", choices=("plain", "json"), default="plain",
                     help="plain: timestamped lines (default); json: one JSON object per line")
    add_kube_flags(run, after=True, namespace=False, identity=False)


# --- run -----------------------------------------------------------------------------------
def _metrics_listener(args: argparse.Namespace) -> tuple[str, int]:
    host, port = args.metrics_bind_address
    if port is not None and args.metrics_port is not None and port != args.metrics_port:
        raise InvalidInputError(f"--metrics-port {args.metrics_port} and --metrics-bind-address port {port} "
                                "differ: give the port once")
    chosen = port if port is not None else args.metrics_port
    return host, 8080 if chosen is None else chosen


def _missing_operator_dependency() -> str | None:
    """The first module of the ``operator`` extra that does not import (the base install is
    only the workspace command)."""
    for module in ("kopf", "prometheus_client", "oauthlib"):
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def _run_scope(args: argparse.Namespace) -> list[str]:
    """``run``'s namespaces: its own ``-n`` (repeatable) plus a ``-n`` given before ``run``."""
    given = [*([args.namespace] if args.namespace else []), *args.namespaces]
    if given and args.all_namespaces:
        raise exits.CommandError("-n/--namespace is not allowed with -A/--all-namespaces",
                                 code=exits.ExitCode.USAGE)
    for flag, value in (("--request-timeout", args.request_timeout), ("--as", args.as_user),
                        ("--as-group", args.as_groups)):
        if value:
            raise exits.CommandError(f"{flag} is for the workspace commands; `run` acts as its own "
                                     "identity from the kubeconfig or the pod", code=exits.ExitCode.USAGE)
    return list(dict.fromkeys(given))


def run_command(args: argparse.Namespace) -> int:
    namespaces = _run_scope(args)
    missing = _missing_operator_dependency()
    if missing is not None:
        raise exits.CommandError(f"`externalauth run` needs the operator's dependencies ({missing} is not "
                                 f"installed): {OPERATOR_EXTRA}")
    from externalauth import runner

    metrics_host, metrics_port = _metrics_listener(args)
    return runner.run(
        namespaces=namespaces,
        all_namespaces=args.all_namespaces,
        peering=args.peering,
        standalone=args.standalone,
        metrics_port=metrics_port,
        metrics_bind_address=metrics_host,
        kubeconfig=args.kubeconfig,
        context=args.context,
        verbose=args.verbose,
        debug=args.debug,
        log_format=args.log_format,
        validation_interval=args.validation_interval,
        revocation_timeout=args.revocation_timeout,
        liveness_port=args.liveness_port,
        operator_namespace=args.operator_namespace,
        shard=args.shard,
    )


# --- the boundary --------------------------------------------------------------------------
def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, name = spec.partition(":")
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return func


def _fail(message: str) -> None:
    from externalauth.cli.formatting import printable

    first = printable(" ".join(str(message).split())) or "failed"
    print(f"{PROG}: error: {first}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["git-credential"] and not {"-h", "--help"} & set(argv):
        from externalauth.cli import gitcredential  # git runs it per fetch: no parser, no kube client

        return gitcredential.main(argv[1:])
    if argv[:1] == [COMPLETE]:
        from externalauth.cli import completion

        return completion.complete_command(build_parser(prog), argv[1:])
    args = build_parser(prog).parse_args(argv)
    try:
        return int(_handler(args.handler)(args) or 0)
    except KeyboardInterrupt as e:
        print(f"\n{PROG}: interrupted", file=sys.stderr, flush=True)
        return exits.code_for(e)
    except ExternalAuthError as e:
        _fail(str(e))
        return exits.code_for(e)
    except BrokenPipeError:
        return EXIT_FAILED
    except Exception as e:
        if args.command == "run":
            raise  # the operator's own failures keep their traceback (its log is for operators)
        _fail(f"unexpected {type(e).__name__} (this is a bug in externalauth; "
                    "please report it with the command you ran)")
        return EXIT_FAILED


def kubectl_plugin() -> int:
    """``kubectl-externalauth``: the same commands as ``kubectl externalauth ...``."""
    return main(prog=KUBECTL_PROG)


def kubectl_complete() -> int:
    """``kubectl_complete-externalauth``: kubectl runs it for ``kubectl externalauth <TAB>``
    with the words after the plugin's name (the last one is being completed)."""
    from externalauth.cli import completion

    return completion.complete_command(build_parser(KUBECTL_PROG), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
