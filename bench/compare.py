#!/usr/bin/env python3
"""This operator and a naive kopf operator side by side, in one invocation (issue 12, item 3).

    .venv/bin/python bench/compare.py [--links 200] [--latency 0.1] [--concurrency 10]
        [--idle-links 2000] [--idle-seconds 60] [--naive-interval 5] [--out FILE.json]
    .venv/bin/python bench/compare.py --full      # N = 1,000, M = 10,000

The naive operator is bench/baseline/naive_operator.py (a kopf timer per link, the official
client, validate-then-save, no claims). Each scenario runs for each operator on its own
fresh control plane (kube-apiserver + etcd) and HTTPS simulator (replay detection on), one
after the other with the same parameters; both operators run as the least-privileged user
of deploy/rbac.yaml and serve one namespace.

- storm: N links due at the same instant T, provider latency L, validation on; ours with
  maxConcurrentRefreshes = K, the naive one with K kopf worker threads (each thread does a
  whole refresh: Secret read, exchange, validation, write). Once with one replica each,
  once with two. One watch of the Secrets, started before T, gives the completion timeline.
- idle: M links not due (validation off): resident memory, CPU share and the requests
  that reach the API server over ``--idle-seconds``.
- restart: the time until every link is decided again after a restart (ours:
  ``externalauth_links`` sums to M; the naive one: every timer has run once, from kopf's
  "Timer 'refresh' succeeded." log lines).

Prints one JSON document with every figure and the ratios ours / naive; ``--out`` also
writes it to a file (bench/plot.py draws the storm timelines from it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from common import (
    CLIENT_ID,
    CLIENT_SECRET,
    STARTED,
    Bench,
    Requests,
    api_requests,
    bench,
    cpu_seconds,
    free_port,
    links_decided,
    request_figures,
    rss_mib,
    stop_process,
)
from tests.harness.operator_fixtures import least_privileged_kubeconfig

NAIVE = Path(__file__).resolve().parent / "baseline" / "naive_operator.py"
NAIVE_RBAC = NAIVE.with_name("rbac.yaml")
NAIVE_STARTED = b"naive operator started"
_TIMER_DONE = re.compile(rb"\[([^/\]\s]+)/([^\]\s]+)\] Timer 'refresh' succeeded")


@dataclasses.dataclass
class Replica:
    """One operator process and where its log of this start begins."""

    proc: subprocess.Popen[bytes]
    log: Path
    offset: int
    metrics_port: int


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str  # "ours" or "naive"
    naive_interval: float
    workers: int

    def command(self, *, b: Bench, kubeconfig: Path, metrics_port: int) -> list[str]:
        bin_dir = Path(sys.executable).parent
        if self.name == "ours":
            return [str(bin_dir / "externalauth"), "run", "-n", b.ns, "--operator-namespace", b.ns,
                    "--kubeconfig", str(kubeconfig), "--metrics-port", str(metrics_port)]
        return [str(bin_dir / "kopf"), "run", "--standalone", "-n", b.ns, str(NAIVE)]

    def env(self, kubeconfig: Path) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
                "NAIVE_INTERVAL": str(self.naive_interval), "NAIVE_WORKERS": str(self.workers)}

    def kubeconfig(self, b: Bench) -> Path:
        """Ours: deploy/rbac.yaml; the naive one: bench/baseline/rbac.yaml (what kopf needs)."""
        if self.name == "ours":
            return least_privileged_kubeconfig(b.cp, "bench-operator")
        role = yaml.safe_load(NAIVE_RBAC.read_text())
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "naive-operator"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": role["metadata"]["name"]},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "naive-operator"}]}
        b.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
        path: Path = b.cp.mint_user("naive-operator")
        return path

    def start(self, b: Bench, *, index: int) -> Replica:
        kubeconfig = self.kubeconfig(b)
        log = b.work / f"{self.name}-{index}.log"
        offset = log.stat().st_size if log.exists() else 0
        port = free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.command(b=b, kubeconfig=kubeconfig, metrics_port=port),
                                    stdout=out, stderr=subprocess.STDOUT, env=self.env(kubeconfig))
        replica = Replica(proc, log, offset, port)
        marker = STARTED if self.name == "ours" else NAIVE_STARTED
        deadline = time.monotonic() + 120
        while marker not in self.log_since(replica):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} operator did not start; see {log}")
            time.sleep(0.05)
        return replica

    @staticmethod
    def log_since(replica: Replica) -> bytes:
        with open(replica.log, "rb") as f:
            f.seek(replica.offset)
            return f.read()

    def decided(self, replica: Replica) -> int:
        """Links this start has decided: ours from /metrics, the naive one from kopf's log."""
        if self.name == "naive":
            return len(set(_TIMER_DONE.findall(self.log_since(replica))))
        return links_decided(replica.metrics_port)

    @staticmethod
    def stop(replica: Replica) -> None:
        stop_process(replica.proc)


# ---------------------------------------------------------------- measuring the cluster side


@dataclasses.dataclass
class CpuMark:
    operator: float
    servers: float

    @classmethod
    def now(cls, replicas: list[Replica], b: Bench) -> CpuMark:
        return cls(sum(cpu_seconds(r.proc.pid) for r in replicas), sum(cpu_seconds(p) for p in b.server_pids()))


@contextlib.contextmanager
def fresh(namespace: str, **sim: Any) -> Iterator[Bench]:
    """A new control plane and simulator; retried once if the control plane fails to start."""
    for attempt in (1, 2):
        try:
            ctx = bench(namespace, replay_detection=True, access_token_lifetime=8 * 3600, **sim)
            b = ctx.__enter__()
        except Exception as e:  # the harness start-up: reported, then retried once
            if attempt == 2:
                raise
            print(f"control plane failed to start ({type(e).__name__}); retrying", flush=True)
            continue
        try:
            yield b
        finally:
            ctx.__exit__(None, None, None)
        return


# ---------------------------------------------------------------- scenarios


class Persists:
    """When each Secret first held a new refresh token, followed by one watch (the operator's
    own watcher: one list, then the changes as they come), started before T. Listing the N
    Secrets every 0.2 s instead cost the API server and this process more CPU than the storm
    itself on two cores, and slowed both operators' storms alike."""

    def __init__(self, b: Bench, original: dict[str, str]) -> None:
        from externalauth.kube import api, connection, watching

        self.original = original
        self.at: dict[str, float] = {}
        self._kube = api.Kube(connection.connect(kubeconfig=str(b.cp.kubeconfig)))
        synced = threading.Event()
        self._watcher = watching.Watcher(self._kube, watching.SECRETS, namespace=b.ns,
                                         selector="externalauth.io/provider=bench", callback=self._seen,
                                         synced=synced.set)
        threading.Thread(target=self._watcher.run, name="bench-persists", daemon=True).start()
        if not synced.wait(60):
            raise SystemExit("storm void: the Secrets' watch did not start within 60 s")

    def _seen(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        token = (obj.get("data") or {}).get("refresh_token")
        if name in self.original and name not in self.at and token is not None \
                and base64.b64decode(token).decode() != self.original[name]:
            self.at[name] = time.monotonic()

    def count(self) -> int:
        return len(self.at)

    def stop(self) -> None:
        self._watcher.stop()
        self._kube.close()


def stored_refresh_tokens(b: Bench) -> dict[str, str]:
    items = b.core.list_namespaced_secret(b.ns, label_selector="externalauth.io/provider=bench").items
    return {s.metadata.name: base64.b64decode(s.data["refresh_token"]).decode() for s in items}


def usable(b: Bench, refresh_tokens: dict[str, str]) -> int:
    """How many stored refresh tokens the provider still exchanges (run after the operators
    stopped, without latency): the others are lost, their users must log in again."""
    b.sim.latency = 0.0
    ok = 0
    with requests.Session() as s:
        for token in refresh_tokens.values():
            r = s.post(b.sim.token_url, verify=b.sim.ca_file, timeout=30, headers={"Accept": "application/json"},
                       data={"grant_type": "refresh_token", "client_id": CLIENT_ID,
                             "client_secret": CLIENT_SECRET, "refresh_token": token})
            ok += r.status_code == 200 and "access_token" in r.json()
    return ok


SETTLE = 3.0  # seconds after the last Secret was persisted that still count (status, events)


def storm(contender: Contender, *, links: int, latency: float, concurrency: int, replicas: int,
          stall: float, setup: float) -> dict[str, Any]:
    with fresh(f"storm{replicas}", latency=latency) as b:
        b.provider(concurrency=concurrency, validate=True)
        running = [contender.start(b, index=i) for i in range(replicas)]
        due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=setup)
        expiry = (due + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        started = time.monotonic()
        original = b.links(links, expiry=expiry, validate=True)
        created = time.monotonic() - started
        wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
        if wait < 2 or b.sim.stats.token_calls:
            raise SystemExit(f"storm void: setup took {created:.0f}s of {setup:.0f}s (raise --setup-seconds), "
                             f"{b.sim.stats.token_calls} token calls before T")
        persists = Persists(b, original)
        time.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()))  # T: every token falls due
        t0 = time.monotonic()
        before_stats, before_api, cpu0 = b.sim.stats, api_requests(b), CpuMark.now(running, b)
        timeline: list[tuple[float, int]] = [(0.0, 0)]
        last_progress, cpu_done = t0, cpu0
        settled: tuple[CpuMark, Requests] | None = None  # SETTLE s after the last progress
        while True:
            now = time.monotonic()
            done = persists.count()
            if done > timeline[-1][1]:
                timeline.append((round(now - t0, 2), done))
                last_progress, cpu_done, settled = now, CpuMark.now(running, b), None
            elif settled is None and now - last_progress >= SETTLE:
                settled = CpuMark.now(running, b), api_requests(b)
            if done == links or now - last_progress > stall:
                break
            time.sleep(max(0.0, 0.2 - (time.monotonic() - now)))
        if settled is None:
            time.sleep(max(0.0, last_progress + SETTLE - time.monotonic()))
            settled = CpuMark.now(running, b), api_requests(b)
        cpu_end, after_api = settled
        after_stats = b.sim.stats
        persists.stop()
        for r in running:
            contender.stop(r)
        persisted = timeline[-1][1]
        lost = links - usable(b, stored_refresh_tokens(b))
        op_cpu, srv_cpu = cpu_end.operator - cpu0.operator, cpu_end.servers - cpu0.servers
        per = max(1, persisted)
        reqs = request_figures(before_api, after_api)
        return {
            "replicas": replicas, "links": links, "setup_s": round(created, 1),
            "persisted": persisted,
            "all_persisted_in_s": timeline[-1][0] if persisted == links else None,
            "last_progress_s": timeline[-1][0],
            "ideal_s": round(links * latency / concurrency, 2),
            "token_calls": after_stats.token_calls - before_stats.token_calls,
            "validation_calls": after_stats.validation_calls - before_stats.validation_calls,
            "validation_calls_before_due": before_stats.validation_calls,
            "reuse_attempts": after_stats.reuse_attempts, "revoked_grants": after_stats.revoked_grants,
            "max_exchanges_per_refresh_token": after_stats.max_exchanges_per_refresh_token,
            "tokens_lost": lost,
            "cpu_and_requests_window": f"T to {SETTLE:.0f} s after the last Secret was persisted",
            "operator_cpu_s_to_last_persisted": round(cpu_done.operator - cpu0.operator, 2),
            "operator_cpu_s": round(op_cpu, 2), "operator_cpu_ms_per_refresh": round(1000 * op_cpu / per, 1),
            "apiserver_etcd_cpu_s": round(srv_cpu, 2),
            "apiserver_etcd_cpu_ms_per_refresh": round(1000 * srv_cpu / per, 1),
            "api_writes": reqs["writes"], "api_reads": reqs["reads"], "api_conflicts": reqs["conflicts"],
            "api_writes_per_refresh": round(reqs["writes"] / per, 2),
            "api_reads_per_refresh": round(reqs["reads"] / per, 2),
            "api_requests": reqs["by_verb_resource_code"],
            "timeline": timeline,
        }


def wait_decided(contender: Contender, replica: Replica, links: int, *, timeout: float) -> float:
    started = time.monotonic()
    while (n := contender.decided(replica)) < links:
        if replica.proc.poll() is not None or time.monotonic() - started > timeout:
            raise SystemExit(f"{contender.name}: only {n} of {links} links decided; see {replica.log}")
        time.sleep(0.2)
    return time.monotonic() - started


def idle(contender: Contender, *, links: int, idle_seconds: float, restart: bool = True) -> dict[str, Any]:
    """M links not due: first start, (restart), then ``idle_seconds`` of watching."""
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with fresh("idle") as b:
        b.provider()
        started = time.monotonic()
        b.links(links, expiry=far)
        created = time.monotonic() - started
        t = time.monotonic()
        replica = contender.start(b, index=0)
        first = time.monotonic() - t + wait_decided(contender, replica, links, timeout=1800)
        figures: dict[str, Any] = {"links": links, "setup_s": round(created, 1), "first_start_all_decided_s":
                                   round(first, 1)}
        if restart:
            contender.stop(replica)
            t = time.monotonic()
            replica = contender.start(b, index=0)
            restarted = time.monotonic() - t + wait_decided(contender, replica, links, timeout=1800)
            figures["restart_all_decided_s"] = round(restarted, 1)
        calls0 = b.sim.stats.token_calls + b.sim.stats.validation_calls
        api0, cpu0, srv0, t0 = api_requests(b), cpu_seconds(replica.proc.pid), server_cpu(b), time.monotonic()
        time.sleep(idle_seconds)  # the measurement window itself
        elapsed = time.monotonic() - t0
        cpu_share = (cpu_seconds(replica.proc.pid) - cpu0) / elapsed
        reqs = request_figures(api0, api_requests(b))
        figures.update({
            "idle_seconds": round(elapsed, 1), "rss_mib": round(rss_mib(replica.proc.pid), 1),
            "idle_cpu_percent_of_a_core": round(100 * cpu_share, 2),
            "apiserver_etcd_cpu_percent_of_a_core": round(100 * (server_cpu(b) - srv0) / elapsed, 2),
            "api_requests_while_idle": reqs["writes"] + reqs["reads"],
            "api_requests_per_s_while_idle": round((reqs["writes"] + reqs["reads"]) / elapsed, 1),
            "api_requests": reqs["by_verb_resource_code"],
            "provider_calls_while_idle": b.sim.stats.token_calls + b.sim.stats.validation_calls - calls0,
        })
        contender.stop(replica)
        return figures


def server_cpu(b: Bench) -> float:
    return b.api_cpu_seconds()


# ---------------------------------------------------------------- the report

RATIO_KEYS = {
    "storm_1": ("all_persisted_in_s", "operator_cpu_s", "operator_cpu_ms_per_refresh", "apiserver_etcd_cpu_s",
                "apiserver_etcd_cpu_ms_per_refresh", "token_calls", "validation_calls", "api_writes",
                "api_reads"),
    "storm_2": ("all_persisted_in_s", "tokens_lost", "reuse_attempts", "operator_cpu_s", "api_writes"),
    "idle": ("rss_mib", "idle_cpu_percent_of_a_core", "api_requests_while_idle", "restart_all_decided_s",
             "first_start_all_decided_s"),
}


def ratios(ours: dict[str, Any], naive: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for scenario, keys in RATIO_KEYS.items():
        row: dict[str, float | None] = {}
        for key in keys:
            a, b = ours[scenario].get(key), naive[scenario].get(key)
            row[key] = round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
        out[scenario] = row
    return out


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=200, help="N, links due at once in the storm")
    ap.add_argument("--latency", type=float, default=0.1, help="L, the provider's latency on every answer (s)")
    ap.add_argument("--concurrency", type=int, default=10, help="K: our maxConcurrentRefreshes, naive threads")
    ap.add_argument("--idle-links", type=int, default=2000, help="M, links not due in the idle scenario")
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--naive-interval", type=float, default=5.0, help="the naive operator's timer interval (s)")
    ap.add_argument("--stall", type=float, default=20.0,
                    help="a storm ends this long after the last Secret was persisted, if not all were")
    ap.add_argument("--setup-seconds", type=float, default=None,
                    help="time allowed to create the storm's objects before they fall due (default 15 + N/20)")
    ap.add_argument("--full", action="store_true", help="N = 1,000 and M = 10,000 (the §10 sizes)")
    ap.add_argument("--only", choices=("ours", "naive"), help="run one operator only (no ratios)")
    ap.add_argument("--out", type=Path, help="also write the JSON here (bench/plot.py reads it)")
    args = ap.parse_args()
    if args.full:
        args.links, args.idle_links = 1000, 10000
    report: dict[str, Any] = {
        "machine": machine(), "command": " ".join(sys.argv),
        "parameters": {"links": args.links, "latency_s": args.latency, "concurrency": args.concurrency,
                       "idle_links": args.idle_links, "idle_seconds": args.idle_seconds,
                       "naive_interval_s": args.naive_interval, "replay_detection": True,
                       "validation_in_storm": True, "validation_in_idle": False},
    }
    began = time.monotonic()
    names = [args.only] if args.only else ["ours", "naive"]
    for name in names:
        contender = Contender(name, args.naive_interval, args.concurrency)
        results: dict[str, Any] = {}
        for replicas in (1, 2):
            print(f"[{name}] storm: {args.links} links, {replicas} replica(s) ...", flush=True)
            results[f"storm_{replicas}"] = storm(contender, links=args.links, latency=args.latency,
                                                 concurrency=args.concurrency, replicas=replicas, stall=args.stall,
                                                 setup=args.setup_seconds or 15 + args.links / 20)
            print(f"[{name}]   {summary(results[f'storm_{replicas}'])}", flush=True)
        print(f"[{name}] idle and restart: {args.idle_links} links ...", flush=True)
        results["idle"] = idle(contender, links=args.idle_links, idle_seconds=args.idle_seconds)
        report[name] = results
    if not args.only:
        report["ratios_ours_over_naive"] = ratios(report["ours"], report["naive"])
    report["wall_clock_s"] = round(time.monotonic() - began, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def summary(s: dict[str, Any]) -> str:
    return (f"persisted {s['persisted']}/{s['links']} in {s['last_progress_s']} s, lost {s['tokens_lost']}, "
            f"reuse {s['reuse_attempts']}, operator CPU {s['operator_cpu_s']} s")


if __name__ == "__main__":
    sys.exit(main())
