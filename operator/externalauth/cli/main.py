"""``externalauth``: run the operator, sign users in, force refreshes, show status.

Every command prints a one-line error and exits non-zero on bad input; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from externalauth import __version__
from externalauth.errors import ExternalAuthError, InvalidInputError
from externalauth.model.durations import parse_duration

EXIT_USAGE = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"externalauth: error: {message}\n")


def _duration(text: str) -> object:
    try:
        return parse_duration(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _bind_address(text: str) -> tuple[str, int | None]:
    from externalauth.metrics import parse_bind_address

    try:
        return parse_bind_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_kube_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="the kubeconfig context to use")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="externalauth", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"externalauth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the operator (kopf under the hood)",
                         description="Run the operator: watch ExternalAuthLinks and keep their tokens fresh.")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces",
                       metavar="NS", help="serve this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="serve every namespace (the default when no -n is given)")
    peer = run.add_mutually_exclusive_group()
    peer.add_argument("--peering", metavar="NAME",
                      help="coordinate with other replicas through kopf peering object NAME")
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
    run.add_argument("--validation-interval", type=_duration, default=parse_duration("1h"),
                     metavar="DURATION", help="validate every token this often (default 1h)")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything (never tokens)")
    run.add_argument("--log-format", choices=("plain", "json"), default="plain",
                     help="plain: timestamped lines (default); json: one JSON object per line")
    add_kube_flags(run)
    run.set_defaults(func=_run)

    try:
        from externalauth.cli import commands
    except ImportError:  # pragma: no cover - partial installs
        commands = None  # type: ignore[assignment]
    if commands is not None:
        commands.register(sub)
    return parser


def _metrics_listener(args: argparse.Namespace) -> tuple[str, int]:
    host, port = args.metrics_bind_address
    if port is not None and args.metrics_port is not None and port != args.metrics_port:
        raise InvalidInputError(f"--metrics-port {args.metrics_port} and --metrics-bind-address port {port} "
                                "differ: give the port once")
    chosen = port if port is not None else args.metrics_port
    return host, 8080 if chosen is None else chosen


def _run(args: argparse.Namespace) -> int:
    from externalauth import runner

    metrics_host, metrics_port = _metrics_listener(args)
    return runner.run(
        namespaces=args.namespaces,
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
        liveness_port=args.liveness_port,
        operator_namespace=args.operator_namespace,
        shard=args.shard,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("externalauth: interrupted", file=sys.stderr)
        return 130
    except ExternalAuthError as e:
        from externalauth.cli.formatting import printable

        print(f"externalauth: error: {printable(str(e))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
