"""``python -m providersim``: run the simulator in its own process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

MISSING_CRYPTOGRAPHY = (
    "providersim: the 'cryptography' package is missing; "
    "install it with: pip install externalauth-providersim (in a checkout: pip install -e ./sim)"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="providersim",
        description="HTTPS OAuth2 provider simulator speaking the dialect of GitHub, GitLab, Gitea, "
        "Bitbucket Cloud, Azure DevOps through Entra ID, or a generic OAuth2/OIDC server.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (0 = any free port; default 8443)")
    p.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help="where ca.pem, the server key and the url file live (reused if present)",
    )
    p.add_argument("--mode", "--profile", dest="mode", default="github",
                   choices=["github", "gitlab", "gitea", "bitbucket-cloud", "azure-devops-entra", "generic"],
                   help="the provider dialect (default github)")
    p.add_argument("--tenant", default="contoso", help="azure-devops-entra: the tenant in the token path")
    p.add_argument("--clock-offset", type=float, default=0.0, metavar="S",
                   help="run the simulator's clock this many seconds apart (Date header, expiries)")
    p.add_argument("--access-token-lifetime", type=int, default=8 * 3600, metavar="S")
    p.add_argument("--refresh-token-lifetime", type=int, default=None, metavar="S")
    p.add_argument("--no-rotation", action="store_true", help="keep refresh tokens on refresh")
    p.add_argument(
        "--replay-detection",
        action="store_true",
        help="reusing a spent refresh token revokes the whole grant",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="added to every token, validation and device answer",
    )
    p.add_argument("--device-interval", type=int, default=5, metavar="S")
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID[:SECRET]",
        help="register a client at start (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no access log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from providersim.simulator import Simulator
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "cryptography":
            raise
        print(MISSING_CRYPTOGRAPHY, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    sim = Simulator(
        mode=args.mode,
        tenant=args.tenant,
        clock_offset=args.clock_offset,
        access_token_lifetime=args.access_token_lifetime,
        refresh_token_lifetime=args.refresh_token_lifetime,
        rotate_refresh_tokens=not args.no_rotation,
        replay_detection=args.replay_detection,
        host=args.host,
        port=args.port,
        device_interval=args.device_interval,
        latency=args.latency,
        state_dir=args.state_dir,
    )
    for spec in args.client:
        client_id, sep, secret = spec.partition(":")
        sim.register_client(client_id, secret if sep else None)

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        sim.start()
    except OSError as e:
        print(
            f"providersim: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr
        )
        return 1
    (args.state_dir / "url").write_text(sim.url + "\n")
    print(sim.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
