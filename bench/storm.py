#!/usr/bin/env python3
"""Storm benchmark (contract §10): N links due at once, provider latency L, maxConcurrentRefreshes K.

    .venv/bin/python bench/storm.py [--links 1000] [--latency 0.1] [--concurrency 10]

Starts a real control plane, the HTTPS simulator (with the latency on every answer) and
the operator (least-privileged, as in the tests); creates N token Secrets and N links
whose tokens all become due at the same instant T (expiry = T + refreshBefore), and
measures from T until every Secret holds a rotated token. Prints the figures and the
target 1.3 x N x L / K.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402

from providersim import Simulator  # noqa: E402

NS = "storm"


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--setup-seconds", type=float, default=120,
                    help="time allowed to create the objects before they all fall due")
    args = ap.parse_args()
    target = 1.3 * args.links * args.latency / args.concurrency
    work = Path(tempfile.mkdtemp(prefix="externalauth-bench-"))
    with ControlPlane() as cp, Simulator(mode="github", access_token_lifetime=8 * 3600,
                                         latency=args.latency) as sim:
        sim.register_client("bench", "bench-secret")
        api = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
        core, co = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NS}})
        core.create_namespaced_secret(NS, {"metadata": {"name": "client"},
                                           "stringData": {"secret": "bench-secret"}})
        co.create_cluster_custom_object("externalauth.io", "v1alpha1", "externalauthproviders", {
            "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthProvider",
            "metadata": {"name": "bench"},
            "spec": {"type": "github", "clientID": "bench", "baseURL": sim.url, "validateURL": "",
                     "caBundle": sim.ca_pem, "maxConcurrentRefreshes": args.concurrency,
                     "clientSecretRef": {"namespace": NS, "name": "client", "key": "secret"}}})
        due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=args.setup_seconds)
        expiry = (due + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        refresh_tokens = {}

        def make(i: int) -> None:
            grant = sim.issue_grant("bench", login=f"user{i}")
            refresh_tokens[f"tok-{i}"] = grant.refresh_token
            core.create_namespaced_secret(NS, {
                "metadata": {"name": f"tok-{i}", "labels": {"externalauth.io/managed": "true"}},
                "stringData": {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                               "expiry": expiry}})

        print(f"creating {args.links} due token Secrets ...", flush=True)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(make, range(args.links)))
        # Least privilege, as in the tests.
        import yaml
        role = next(d for d in yaml.safe_load_all((ROOT / "deploy/rbac.yaml").read_text())
                    if d and d["kind"] == "ClusterRole")
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench-operator"}]}]))
        kubeconfig = cp.mint_user("bench-operator")
        log = open(work / "operator.log", "wb")
        operator = subprocess.Popen([str(Path(sys.executable).parent / "externalauth"), "run", "-n", NS,
                                     "--kubeconfig", str(kubeconfig), "--metrics-port", "0"],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            while b"externalauth operator started" not in (work / "operator.log").read_bytes():
                time.sleep(0.1)
            print(f"creating {args.links} links ...", flush=True)
            setup_started = time.monotonic()
            def link(i: int) -> None:
                co.create_namespaced_custom_object("externalauth.io", "v1alpha1", NS, "externalauthlinks", {
                    "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
                    "metadata": {"name": f"link-{i}"},
                    "spec": {"providerName": "bench", "secretName": f"tok-{i}", "validate": False}})
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(link, range(args.links)))
            created = time.monotonic() - setup_started
            wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if wait < 5:
                print(f"setup took too long ({created:.0f}s): raise --setup-seconds")
                return 1
            if sim.stats.token_calls:
                print("tokens were refreshed before they were due: the benchmark is void")
                return 1
            print(f"all created in {created:.1f}s; the storm starts in {wait:.0f}s", flush=True)
            time.sleep(wait)  # the instant every token falls due: the benchmark's start line
            started = time.monotonic()
            cpu_before = cpu_seconds(operator.pid)
            while sim.stats.successful_refreshes < args.links:
                if operator.poll() is not None:
                    print("the operator died; see", work / "operator.log")
                    return 1
                if time.monotonic() - started > max(600, 10 * target):
                    print("timed out")
                    return 1
                time.sleep(0.05)
            exchanged = time.monotonic() - started
            def persisted() -> int:
                items = core.list_namespaced_secret(NS, label_selector="externalauth.io/managed=true").items
                import base64
                return sum(1 for s in items if s.metadata.name in refresh_tokens and
                           base64.b64decode(s.data["refresh_token"]).decode() != refresh_tokens[s.metadata.name])
            while (done := persisted()) < args.links:
                if time.monotonic() - started > max(600, 10 * target):
                    print(f"timed out with {done} persisted")
                    return 1
                time.sleep(0.2)
            total = time.monotonic() - started
            operator_cpu = cpu_seconds(operator.pid) - cpu_before
            stats = sim.stats
            print(json.dumps({
                "links": args.links, "latency_s": args.latency, "maxConcurrentRefreshes": args.concurrency,
                "setup_s": round(created, 2), "all_exchanged_in_s": round(exchanged, 2),
                "all_persisted_in_s": round(total, 2), "target_s": round(target, 2),
                "met": total <= target, "token_calls": stats.token_calls,
                "max_exchanges_per_refresh_token": stats.max_exchanges_per_refresh_token,
                "operator_cpu_s": round(operator_cpu, 2),
                "operator_cpu_ms_per_refresh": round(1000 * operator_cpu / args.links, 1),
                "operator_rss_mib": round(rss_mib(operator.pid), 1),
                "machine": f"{os.cpu_count()} cores",
            }, indent=2))
        finally:
            operator.send_signal(signal.SIGTERM)
            operator.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
