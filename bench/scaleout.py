#!/usr/bin/env python3
"""Scale-out benchmark (issue 12, item 4): the same links served by 1, 2 and 3 replicas,
each replica the shard ``--shard I/R`` of the namespaces (a stable hash of the namespace).

    .venv/bin/python bench/scaleout.py [--links 10000] [--namespaces 60] [--replicas 1,2,3]
                                       [--storm 1000] [--latency 0.1] [--concurrency 10]

Creates N token Secrets (not due for 8 h) and N links round-robin over M namespaces,
once. Then, for each replica count R: starts R replicas cluster-wide, each with its shard,
and measures the time until every link is decided (the replicas' ``externalauth_links``
sum to N), each replica's resident memory and links, the idle CPU of each over 30 s, and
a storm: S of the links (spread over the namespaces) are made due at one instant T by
rewriting their expiry, and the clock runs from T until all S hold a rotated refresh
token; with the CPU of each replica and of kube-apiserver + etcd over the storm. Every
storm must be exactly-once: the simulator counts token calls and reuse.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import STARTED, Bench, bench, cpu_seconds, free_port, links_decided, rss_mib, stop_process
from tests.harness.operator_fixtures import least_privileged_kubeconfig

IDLE_SECONDS = 30.0


@dataclasses.dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def links(self) -> int:
        return links_decided(self.port)

    def stop(self) -> None:
        stop_process(self.proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=10000)
    ap.add_argument("--namespaces", type=int, default=60)
    ap.add_argument("--replicas", default="1,2,3", help="replica counts to run, comma-separated")
    ap.add_argument("--storm", type=int, default=1000, help="links made due at once in each round (0: none)")
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--setup-seconds", type=float, default=30, help="time between arming a storm and T")
    args = ap.parse_args()
    counts = [int(r) for r in args.replicas.split(",")]
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = []
    with bench("scaleout", access_token_lifetime=8 * 3600, latency=args.latency) as b:
        b.provider(concurrency=args.concurrency)
        namespaces = [f"shard-ns-{i:03d}" for i in range(args.namespaces)]
        for ns in namespaces:
            b.core.create_namespace({"metadata": {"name": ns}})
        print(f"creating {args.links} token Secrets and links over {args.namespaces} namespaces ...", flush=True)
        t = time.monotonic()
        tokens = b.links(args.links, expiry=far, namespaces=namespaces)
        created = time.monotonic() - t
        print(f"created in {created:.0f}s", flush=True)
        kubeconfig = least_privileged_kubeconfig(b.cp, "bench-operator")
        # Each round's storm takes links never refreshed before: one just refreshed would be
        # held back by the half-lifetime clamp (contract §9.12: its "lifetime" would be the
        # few minutes since that refresh).
        everyone = sorted(tokens)
        for round_no, r in enumerate(counts):
            group = everyone[round_no::len(counts)]  # disjoint between rounds, spread over namespaces
            storm_keys = group[:: max(1, len(group) // max(1, args.storm))][: args.storm] if args.storm else []
            replicas = []
            start = time.monotonic()
            for i in range(r):
                port = free_port()
                log = b.work / f"operator-{r}-{i}.log"
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "externalauth"), "run", "-A", "--operator-namespace", b.ns,
                     "--kubeconfig", str(kubeconfig), "--metrics-port", str(port), "--shard", f"{i}/{r}"],
                    stdout=open(log, "ab"), stderr=subprocess.STDOUT)
                replicas.append(Replica(proc, port, log))
            while sum(x.links() for x in replicas) < args.links:
                if any(x.proc.poll() is not None for x in replicas):
                    raise SystemExit(f"a replica exited; see {b.work}")
                if time.monotonic() - start > 1800:
                    raise SystemExit("not every link decided after 30 min")
                time.sleep(0.5)
            decided = time.monotonic() - start
            assert all(STARTED in x.log.read_bytes() for x in replicas)
            per_links = [x.links() for x in replicas]
            print(f"{r} replica(s): all decided in {decided:.1f}s ({per_links}); idling {IDLE_SECONDS:.0f}s ...",
                  flush=True)
            cpu0, t0 = [cpu_seconds(x.proc.pid) for x in replicas], time.monotonic()
            time.sleep(IDLE_SECONDS)  # the measurement window itself
            elapsed = time.monotonic() - t0
            idle = [(cpu_seconds(x.proc.pid) - c) / elapsed for x, c in zip(replicas, cpu0, strict=True)]
            rss = [rss_mib(x.proc.pid) for x in replicas]
            storm: dict[str, object] = {}
            if storm_keys:
                storm = run_storm(b, replicas, storm_keys, tokens, setup=args.setup_seconds)
            results.append({
                "replicas": r, "links_per_replica": per_links, "start_all_decided_s": round(decided, 1),
                "rss_mib_per_replica": [round(x, 1) for x in rss],
                "idle_cpu_percent_of_a_core_per_replica": [round(100 * x, 2) for x in idle],
                **storm,
            })
            print(json.dumps(results[-1]), flush=True)
            for x in replicas:
                x.stop()
    print(json.dumps({"links": args.links, "namespaces": args.namespaces, "setup_s": round(created, 1),
                      "storm_links": len(storm_keys), "latency_s": args.latency,
                      "maxConcurrentRefreshes": args.concurrency, "machine": f"{os.cpu_count()} cores",
                      "rounds": results}, indent=2))
    return 0


def run_storm(b: Bench, replicas: list[Replica], keys: list[str], tokens: dict[str, str], *,
              setup: float) -> dict[str, object]:
    """Make ``keys`` due at one instant T (their expiry becomes T + refreshBefore) and time
    them until every one holds a rotated refresh token (``tokens`` is updated to them)."""
    due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=setup)
    expiry = (due + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def arm(key: str) -> None:
        ns, name = key.split("/")
        b.core.patch_namespaced_secret(name, ns, {"stringData": {"expiry": expiry}})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(arm, keys))
    wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
    if wait < 3:
        raise SystemExit("arming the storm took too long: raise --setup-seconds")
    before = b.sim.stats
    time.sleep(wait)  # T: the storm's start line
    started = time.monotonic()
    cpu0, srv0 = [cpu_seconds(x.proc.pid) for x in replicas], b.api_cpu_seconds()
    while b.sim.stats.successful_refreshes - before.successful_refreshes < len(keys):
        if time.monotonic() - started > 600:
            raise SystemExit("storm timed out")
        time.sleep(0.05)
    exchanged = time.monotonic() - started

    current: dict[str, str] = {}

    def rotated() -> int:
        items = b.core.list_secret_for_all_namespaces(label_selector="externalauth.io/provider=bench").items
        current.clear()
        current.update({f"{s.metadata.namespace}/{s.metadata.name}":
                        base64.b64decode(s.data["refresh_token"]).decode() for s in items})
        return sum(1 for k in keys if current.get(k) != tokens[k])

    while (done := rotated()) < len(keys):
        if time.monotonic() - started > 600:
            raise SystemExit(f"only {done} persisted")
        time.sleep(0.2)
    total = time.monotonic() - started
    cpu = [cpu_seconds(x.proc.pid) - c for x, c in zip(replicas, cpu0, strict=True)]
    srv = b.api_cpu_seconds() - srv0
    stats = b.sim.stats
    tokens.update({k: current[k] for k in keys})  # the next round starts from the rotated tokens
    return {
        "storm_all_exchanged_s": round(exchanged, 2), "storm_all_persisted_s": round(total, 2),
        "storm_token_calls": stats.token_calls - before.token_calls,
        "max_exchanges_per_refresh_token": stats.max_exchanges_per_refresh_token,
        "refresh_token_reuse": stats.reuse_attempts - before.reuse_attempts,
        "grants_revoked": stats.revoked_grants - before.revoked_grants,
        "storm_operator_cpu_s_per_replica": [round(x, 2) for x in cpu],
        "storm_operator_cpu_ms_per_refresh": round(1000 * sum(cpu) / len(keys), 1),
        "storm_apiserver_etcd_cpu_ms_per_refresh": round(1000 * srv / len(keys), 1),
    }


if __name__ == "__main__":
    sys.exit(main())
