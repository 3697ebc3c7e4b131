#!/usr/bin/env python3
"""The demo: a real control plane, the HTTPS provider simulator and the operator, live.

    make demo                      # or: .venv/bin/python hack/demo.py [--links 5] [--duration 0]

Builds the control plane the first time (minutes), then starts etcd + kube-apiserver,
the GitHub-like simulator (its own CA, trusted through the provider's caBundle), applies
an ExternalAuthProvider and a few users' token Secrets and ExternalAuthLinks, runs
``externalauth run`` and shows a live table while tokens (60 s lifetime) are refreshed
ahead of expiry. Ctrl-C stops everything; no process is left behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "sim")]

from tests.harness.controlplane import ControlPlane  # noqa: E402

from providersim import Simulator  # noqa: E402

NS = "demo"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
CLIENT_ID, CLIENT_SECRET = "demo-app", "demo-app-secret"


def say(text: str) -> None:
    print(f"\033[1m==>\033[0m {text}" if sys.stdout.isatty() else f"==> {text}", flush=True)


def manifests(sim: Simulator, links: int) -> str:
    def indent(text: str, n: int) -> str:
        return "\n".join(" " * n + line for line in text.strip().splitlines())

    docs = [f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: github-app-client, namespace: {NS}}}
stringData: {{clientSecret: {CLIENT_SECRET}}}
---
apiVersion: externalauth.io/v1alpha1
kind: ExternalAuthProvider
metadata: {{name: github-demo}}
spec:
  type: github
  clientID: {CLIENT_ID}
  baseURL: {sim.url}
  validateURL: {sim.url}/user
  clientSecretRef: {{namespace: {NS}, name: github-app-client, key: clientSecret}}
  maxConcurrentRefreshes: 4
  caBundle: |
{indent(sim.ca_pem, 4)}"""]
    now = dt.datetime.now(dt.UTC)
    for i, user in enumerate(USERS[:links]):
        grant = sim.issue_grant(CLIENT_ID, login=user)
        # Stagger expiries so refreshes trickle in rather than all at once.
        expiry = (now + dt.timedelta(seconds=40 + 7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        docs.append(f"""apiVersion: v1
kind: Secret
metadata:
  name: {user}-github
  namespace: {NS}
  labels: {{externalauth.io/provider: github-demo}}
type: externalauth.io/oauth2-token
stringData:
  access_token: {grant.access_token}
  refresh_token: {grant.refresh_token}
  expiry: "{expiry}"
---
apiVersion: externalauth.io/v1alpha1
kind: ExternalAuthLink
metadata: {{name: {user}-github, namespace: {NS}}}
spec:
  providerName: github-demo
  secretName: {user}-github
  refreshBefore: 30s
  outputFormats: [git-credentials]""")
    return "\n---\n".join(docs) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=5, choices=range(1, len(USERS) + 1),
                        metavar=f"1..{len(USERS)}", help="how many users' links (default 5)")
    parser.add_argument("--duration", type=float, default=0,
                        help="stop by itself after this many seconds (0: until Ctrl-C)")
    args = parser.parse_args()

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="externalauth-demo-"))
    operator = None
    say("starting the control plane (the first run builds kube-apiserver, etcd, kubectl: minutes)")
    cp = ControlPlane()
    sim = Simulator(mode="github", access_token_lifetime=60, refresh_token_lifetime=30 * 86400)
    try:
        cp.start()
        say(f"kube-apiserver at {cp.server}; kubeconfig {cp.kubeconfig}")
        sim.start()
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        say(f"provider simulator at {sim.url} (HTTPS, own CA)")
        cp.kubectl("apply", "-f", "-", input=manifests(sim, args.links))
        say(f"applied provider github-demo and {args.links} links in namespace {NS}")
        exe = Path(sys.executable).parent / "externalauth"
        log_path = work / "operator.log"
        log = open(log_path, "wb")
        operator = subprocess.Popen(
            [str(exe), "run", "-n", NS, "--operator-namespace", NS, "--kubeconfig", str(cp.kubeconfig),
             "--metrics-port", "0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        say(f"operator running (pid {operator.pid}); log: {log_path}")
        say("tokens live 60 s and are refreshed 30 s ahead of expiry; Ctrl-C to stop\n")
        started = time.monotonic()
        kubectl = [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig)]
        while not stopping:
            if args.duration and time.monotonic() - started > args.duration:
                break
            table = subprocess.run([*kubectl, "get", "externalauthlinks", "-n", NS, "-o", "wide"],
                                   capture_output=True, text=True).stdout
            stats = sim.stats
            if sys.stdout.isatty():
                print("\033[H\033[J", end="")
            print(f"{dt.datetime.now():%H:%M:%S}  refreshes at the provider: {stats.successful_refreshes}"
                  f"  validations: {stats.validation_calls}"
                  f"  max exchanges per refresh token: {stats.max_exchanges_per_refresh_token}")
            print(table, flush=True)
            if operator.poll() is not None:
                say(f"the operator exited with {operator.returncode}; its log:")
                print(log_path.read_text()[-3000:])
                return 1
            for _ in range(20):
                if stopping:
                    break
                time.sleep(0.1)
        return 0
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        say(f"demo failed: {type(e).__name__}: {e}")
        return 1
    finally:
        print()
        say("stopping operator, simulator and control plane")
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
        sim.stop()
        cp.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
