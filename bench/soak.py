#!/usr/bin/env python3
"""Soak (issue #11.8): many links with short-lived tokens for a long time.

    .venv/bin/python bench/soak.py [--links 500] [--lifetime 30] [--minutes 30] [--plot docs/soak.png]

Every access token lives ``--lifetime`` seconds, so each link is refreshed about every
half lifetime (contract §9.12) for ``--minutes``. Every 5 s it samples the operator's
resident memory and threads, the refreshes done, and the number of links whose Secret
holds an EXPIRED access token (a missed refresh). Prints a JSON summary (first and last
fifth of the run side by side, so growth is visible) and, with ``--plot``, draws RSS,
threads and expired tokens over time into a PNG (needs matplotlib).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

from common import bench, cpu_seconds, rss_mib


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def expired(b: object, now: dt.datetime) -> int:
    items = b.core.list_namespaced_secret(b.ns, label_selector="externalauth.io/provider=bench").items  # type: ignore[attr-defined]
    count = 0
    for s in items:
        raw = (s.data or {}).get("expiry")
        if raw and dt.datetime.fromisoformat(base64.b64decode(raw).decode().replace("Z", "+00:00")) <= now:
            count += 1
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=500)
    ap.add_argument("--lifetime", type=int, default=30, help="access-token lifetime in seconds")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    samples: list[dict[str, float]] = []
    with bench("soak", access_token_lifetime=args.lifetime) as b:
        b.provider(concurrency=args.concurrency)
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.lifetime + 120)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"creating {args.links} links ...", flush=True)
        b.links(args.links, expiry=expiry)
        operator = b.start_operator()
        started = time.monotonic()
        end = started + args.minutes * 60
        cpu0 = cpu_seconds(operator.pid)
        while time.monotonic() < end:
            now = dt.datetime.now(dt.UTC)
            samples.append({
                "t": round(time.monotonic() - started, 1),
                "rss_mib": round(rss_mib(operator.pid), 1),
                "threads": threads(operator.pid),
                "refreshes": b.sim.stats.successful_refreshes,
                "expired": expired(b, now),
                "cpu_s": round(cpu_seconds(operator.pid) - cpu0, 1),
            })
            if len(samples) % 12 == 0:
                print(json.dumps(samples[-1]), flush=True)
            time.sleep(5)
        stats = b.sim.stats
        ok = operator.poll() is None
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
        axes[1].plot(t, [s["threads"] for s in samples])
        axes[1].set_ylabel("threads")
        axes[2].plot(t, [s["expired"] for s in samples])
        axes[2].set_ylabel("expired tokens")
        axes[2].set_xlabel("minutes")
        fig.suptitle(f"soak: {args.links} links, {args.lifetime} s tokens, {stats.successful_refreshes} refreshes")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=90)
        print(f"plot: {args.plot}")
    return 0 if ok and summary["expired_max"] in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
