#!/usr/bin/env python3
"""Soak (issue #11.8): many links with short-lived tokens for a long time.

    .venv/bin/python bench/soak.py [--links 500] [--lifetime 30] [--minutes 30] [--plot docs/soak.png]

Every access token lives ``--lifetime`` seconds, so each link is refreshed about every
half lifetime (contract §9.12) for ``--minutes``. Every 5 s it samples the operator's
resident memory, threads and asyncio tasks (externalauth/memory_report.py's report), the
refreshes done, the **refresh lag** of every link (how long ago its token fell due
without having been refreshed: due = expiry - lifetime / 2) and the number of links whose
Secret holds an EXPIRED access token (a missed refresh). Prints a JSON summary (first and
last fifth of the run side by side, so growth is visible) and, with ``--plot``, draws RSS,
threads and tasks, and refresh lag over time into a PNG (needs matplotlib).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import Bench, api_requests, bench, cpu_seconds, request_figures, rss_mib

from externalauth.memory_report import REPORT_ENV


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def lags(b: Bench, now: dt.datetime, lifetime: float) -> list[float]:
    """Per link: seconds since its token fell due (expiry - lifetime / 2) without a refresh (0: not due)."""
    items = b.core.list_namespaced_secret(b.ns, label_selector="externalauth.io/provider=bench").items
    out = []
    for s in items:
        raw = (s.data or {}).get("expiry")
        if raw:
            expiry = dt.datetime.fromisoformat(base64.b64decode(raw).decode().replace("Z", "+00:00"))
            out.append(max(0.0, (now - expiry).total_seconds() + lifetime / 2))
    return out


def engine_counts(pid: int, report: Path) -> dict[str, int]:
    """The operator's asyncio tasks and threads, from its SIGUSR1 report."""
    before = report.stat().st_mtime_ns if report.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not report.exists() or report.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            return {"tasks": -1, "threads": -1}
        time.sleep(0.02)
    data = json.loads(report.read_text())
    return {"tasks": int(data.get("tasks", -1)), "threads": int(data.get("threads", -1))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=500)
    ap.add_argument("--lifetime", type=int, default=30, help="access-token lifetime in seconds")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    samples: list[dict[str, float]] = []
    report = Path(tempfile.mkdtemp(prefix="externalauth-soak-")) / "report.json"
    os.environ[REPORT_ENV] = str(report)
    with bench("soak", access_token_lifetime=args.lifetime) as b:
        b.provider(concurrency=args.concurrency)
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.lifetime + 120)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"creating {args.links} links ...", flush=True)
        b.links(args.links, expiry=expiry)
        operator = b.start_operator()
        started = time.monotonic()
        end = started + args.minutes * 60
        cpu0 = cpu_seconds(operator.pid)
        requests0, refreshes0 = api_requests(b), b.sim.stats.successful_refreshes
        while time.monotonic() < end:
            now = dt.datetime.now(dt.UTC)
            lag = sorted(lags(b, now, args.lifetime))
            samples.append({
                "t": round(time.monotonic() - started, 1),
                "rss_mib": round(rss_mib(operator.pid), 1),
                "threads": threads(operator.pid),
                **{k: v for k, v in engine_counts(operator.pid, report).items() if k == "tasks"},
                "refreshes": b.sim.stats.successful_refreshes,
                "lag_max_s": round(lag[-1], 1) if lag else 0.0,
                "lag_p99_s": round(lag[int(0.99 * (len(lag) - 1))], 1) if lag else 0.0,
                "expired": sum(1 for x in lag if x > args.lifetime / 2),
                "cpu_s": round(cpu_seconds(operator.pid) - cpu0, 1),
            })
            if len(samples) % 12 == 0:
                print(json.dumps(samples[-1]), flush=True)
            time.sleep(5)
        stats = b.sim.stats
        ok = operator.poll() is None
        calls = request_figures(requests0, api_requests(b), own_lists=len(samples))
        done = max(1, stats.successful_refreshes - refreshes0)
    fifth = max(1, len(samples) // 5)
    head, tail = samples[:fifth], samples[-fifth:]
    summary = {
        "links": args.links, "lifetime_s": args.lifetime, "minutes": args.minutes,
        "operator_alive": ok, "refreshes": stats.successful_refreshes,
        "max_exchanges_per_refresh_token": stats.max_exchanges_per_refresh_token,
        "reuse": stats.reuse_attempts, "revoked": stats.revoked_grants,
        "expired_max": max(s["expired"] for s in samples[fifth:]) if len(samples) > fifth else None,
        "rss_mib_first_fifth": statistics.median(s["rss_mib"] for s in head),
        "rss_mib_last_fifth": statistics.median(s["rss_mib"] for s in tail),
        "threads_first_fifth": statistics.median(s["threads"] for s in head),
        "threads_last_fifth": statistics.median(s["threads"] for s in tail),
        "tasks_first_fifth": statistics.median(s["tasks"] for s in head),
        "tasks_last_fifth": statistics.median(s["tasks"] for s in tail),
        "lag_max_s": max(s["lag_max_s"] for s in samples[fifth:]) if len(samples) > fifth else None,
        "lag_p99_s_median": statistics.median(s["lag_p99_s"] for s in samples),
        "operator_log": str(b.log),
        "api_writes_per_refresh": round(calls["writes"] / done, 2),
        "api_reads_per_refresh": round(calls["reads"] / done, 2),
        "api_requests": calls["by_verb_resource_code"],
        "cpu_s_per_refresh": round(samples[-1]["cpu_s"] / max(1, stats.successful_refreshes), 4),
    }
    print(json.dumps(summary, indent=2))
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s["t"] / 60 for s in samples]
        fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 7))
        axes[0].plot(t, [s["rss_mib"] for s in samples])
        axes[0].set_ylabel("operator RSS (MiB)")
        axes[0].set_ylim(bottom=0)
        axes[1].plot(t, [s["threads"] for s in samples], label="threads")
        axes[1].plot(t, [s["tasks"] for s in samples], label="asyncio tasks")
        axes[1].set_ylabel("count")
        axes[1].set_ylim(bottom=0)
        axes[1].legend(loc="upper right")
        axes[2].plot(t, [s["lag_max_s"] for s in samples], label="max")
        axes[2].plot(t, [s["lag_p99_s"] for s in samples], label="p99")
        axes[2].axhline(args.lifetime / 2, color="red", linestyle=":", label="token expires")
        axes[2].set_ylabel("refresh lag (s)")
        axes[2].legend(loc="upper right")
        axes[2].set_xlabel("minutes")
        fig.suptitle(f"soak: {args.links} links, {args.lifetime} s tokens, {stats.successful_refreshes} refreshes")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=90)
        print(f"plot: {args.plot}")
    return 0 if ok and summary["expired_max"] in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
