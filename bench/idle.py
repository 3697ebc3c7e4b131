#!/usr/bin/env python3
"""Idle and restart benchmark (contract §10): N links, none due.

    .venv/bin/python bench/idle.py [--links 10000] [--idle-seconds 60]

Creates N token Secrets (not due for 8 h) and N links, starts the operator and waits until
every link has been decided (``externalauth_links`` sums to N on /metrics). Then restarts
the operator and measures how long it takes to decide every link again ("restart: all
scheduled within 60 s; links not due are not refreshed"), and finally measures the idle
operator's CPU share and resident memory over ``--idle-seconds`` ("≤ 1 % of a core,
≤ 200 MB, no requests beyond scheduled work": the simulator counts provider calls).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import bench, cpu_seconds, free_port, rss_mib, wait_decided

from externalauth.memory_report import REPORT_ENV


def memory_breakdown(pid: int, report: Path) -> dict[str, object]:
    """The engine's per-link structures by size (externalauth/memory_report.py): MiB, and bytes per link."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while not report.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the operator wrote no memory report")
        time.sleep(0.5)
    data = json.loads(report.read_text())
    links = max(1, int(data.pop("links")))
    secrets = data.pop("secrets")
    counts = {"tasks": data.pop("tasks"), "threads": data.pop("threads")}
    out: dict[str, object] = {k: {"mib": round(v / 2**20, 2), "bytes_per_link": round(v / links)}
                              for k, v in data.items()}
    out["cached"] = {"links": links, "secrets": secrets, **counts}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=10000)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--breakdown", action="store_true",
                    help="print the engine's per-link structures' sizes after the idle window "
                         "(externalauth/memory_report.py)")
    ap.add_argument("--profile", metavar="SVG", help="record the idle window with py-spy")
    ap.add_argument("--create-threads", type=int, default=16, help="parallel creations while setting up")
    args = ap.parse_args()
    report = None
    if args.breakdown:
        report = Path(tempfile.mkdtemp(prefix="externalauth-memory-")) / "report.json"
        os.environ[REPORT_ENV] = str(report)
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with bench("idle", access_token_lifetime=8 * 3600) as b:
        b.provider()
        print(f"creating {args.links} token Secrets and links ...", flush=True)
        t, server_cpu0 = time.monotonic(), b.api_cpu_seconds()
        b.links(args.links, expiry=far, threads=args.create_threads)
        created = time.monotonic() - t
        creation = {"setup_s": round(created, 1),
                    "setup_apiserver_etcd_cpu_s": round(b.api_cpu_seconds() - server_cpu0, 1),
                    "apiserver_etcd_rss_mib_after_setup": round(sum(rss_mib(p) for p in b.server_pids()), 1)}
        port = free_port()
        print(f"created in {created:.0f}s; first start ...", flush=True)
        start = time.monotonic()
        b.start_operator("--metrics-port", str(port))
        wait_decided(port, args.links, timeout=1800)
        first_total = time.monotonic() - start
        print(f"first start: all decided in {first_total:.1f}s; restarting ...", flush=True)
        b.stop_operator()
        start = time.monotonic()
        b.start_operator("--metrics-port", str(port))
        restart = time.monotonic() - start
        restart_total = restart + wait_decided(port, args.links, timeout=600)
        print(f"restart: all decided in {restart_total:.1f}s; idling {args.idle_seconds:.0f}s ...", flush=True)
        assert b.operator is not None
        calls_before = b.sim.stats.token_calls + b.sim.stats.validation_calls
        profiler = b.profile(b.operator.pid, args.profile) if args.profile else None
        cpu0, t0 = cpu_seconds(b.operator.pid), time.monotonic()
        time.sleep(args.idle_seconds)  # the measurement window itself
        cpu_share = (cpu_seconds(b.operator.pid) - cpu0) / (time.monotonic() - t0)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        breakdown = memory_breakdown(b.operator.pid, report) if report else None
        print(json.dumps({
            "links": args.links, **creation,
            "first_start_all_decided_s": round(first_total, 1),
            "restart_all_decided_s": round(restart_total, 1), "restart_target_s": 60,
            "idle_cpu_percent_of_a_core": round(100 * cpu_share, 2), "idle_cpu_target_percent": 1,
            "rss_mib": round(rss_mib(b.operator.pid), 1), "rss_target_mib": 200,
            "provider_calls_while_idle": b.sim.stats.token_calls + b.sim.stats.validation_calls - calls_before,
            "token_calls_total": b.sim.stats.token_calls,
            **({"memory_by_component": breakdown} if breakdown else {}),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
