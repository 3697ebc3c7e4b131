#!/usr/bin/env python3
"""A tenant's large labelled Secrets do not grow the operator's memory (contract §9.16,
issue 18.1): memory grows with links, not with what tenants label.

    .venv/bin/python bench/labelled_memory.py [--links 1000] [--big 400] [--big-kib 900]

Creates N token Secrets with links (not due), starts the operator, waits until every link is
decided and reads its resident memory (VmRSS) and peak (VmHWM): the run without big Secrets.
Then adds ``--big`` Secrets of ``--big-kib`` KiB each, labelled for the same provider, with
no link (the attack: about 400 of 900 KB used to exceed the chart's 512 Mi limit on one list
page and crash-loop the operator), restarts the operator (start-up lists them all), waits
until every link is decided again, and reads the same figures, once more after an edit of
every big Secret (the watch path). Target: within 50 MB of the run without them.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from common import bench, free_port, rss_mib, wait_decided

TARGET_MIB = 50


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0



def settle_rss(pid: int, seconds: float = 5.0) -> float:
    """Resident memory once the process is quiet (the lowest of a few reads)."""
    lowest = rss_mib(pid)
    for _ in range(int(seconds / 0.5)):
        time.sleep(0.5)
        lowest = min(lowest, rss_mib(pid))
    return lowest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=1000)
    ap.add_argument("--big", type=int, default=400, help="labelled Secrets with no link")
    ap.add_argument("--big-kib", type=int, default=900, help="size of each one's data")
    ap.add_argument("--create-threads", type=int, default=8)
    args = ap.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with bench("labelled", access_token_lifetime=8 * 3600) as b:
        b.provider()
        # The big Secrets go to a tenant namespace the operator serves (not its own namespace,
        # whose Secrets it also lists, unlabelled, for client secrets).
        tenant = "labelled-tenant"
        b.core.create_namespace({"metadata": {"name": tenant}})
        served = ("-n", tenant, "--metrics-port", str(port := free_port()))
        print(f"creating {args.links} token Secrets and links ...", flush=True)
        b.links(args.links, expiry=far, threads=args.create_threads)
        b.start_operator(*served)
        assert b.operator is not None
        without_s = wait_decided(port, args.links, timeout=1800)
        without = {"rss_mib": round(settle_rss(b.operator.pid), 1), "peak_mib": round(peak_mib(b.operator.pid), 1),
                   "all_decided_s": round(without_s, 1)}
        print(f"without big Secrets: {without}; creating {args.big} of {args.big_kib} KiB ...", flush=True)
        b.stop_operator()

        blob = base64.b64encode(os.urandom(args.big_kib * 1024)).decode()

        def big(i: int, edit: bool = False) -> None:
            body = {"metadata": {"name": f"junk-{i}", "labels": {"externalauth.io/provider": "bench"}},
                    "data": {"access_token": blob, "refresh_token": base64.b64encode(b"junk").decode()}}
            if edit:
                b.core.patch_namespaced_secret(f"junk-{i}", tenant, {"metadata": {"annotations": {"edited": "1"}}})
            else:
                b.core.create_namespaced_secret(tenant, body)

        with concurrent.futures.ThreadPoolExecutor(args.create_threads) as pool:
            list(pool.map(big, range(args.big)))
        b.start_operator(*served)
        with_s = wait_decided(port, args.links, timeout=1800)
        listed = {"rss_mib": round(settle_rss(b.operator.pid), 1), "peak_mib": round(peak_mib(b.operator.pid), 1),
                  "all_decided_s": round(with_s, 1)}
        print(f"with big Secrets, after start-up: {listed}; editing each ...", flush=True)
        with concurrent.futures.ThreadPoolExecutor(args.create_threads) as pool:
            list(pool.map(lambda i: big(i, edit=True), range(args.big)))
        time.sleep(5)  # the watch events arrive; settle_rss then reads the quiet process
        edited = {"rss_mib": round(settle_rss(b.operator.pid), 1), "peak_mib": round(peak_mib(b.operator.pid), 1)}
        growth = max(listed["peak_mib"], edited["peak_mib"]) - without["peak_mib"]
        print(json.dumps({
            "command": command, "links": args.links, "big_secrets": args.big, "big_secret_kib": args.big_kib,
            "without_big": without, "with_big_after_start": listed, "with_big_after_edits": edited,
            "rss_growth_mib": round(max(listed["rss_mib"], edited["rss_mib"]) - without["rss_mib"], 1),
            "peak_growth_mib": round(growth, 1), "target_mib": TARGET_MIB,
            "token_calls": b.sim.stats.token_calls,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
