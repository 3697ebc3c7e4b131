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
import base64
import datetime as dt
import json
import os
import signal
import sys
import time

from common import api_requests, bench, cpu_seconds, cpu_split, request_figures, rss_mib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--setup-seconds", type=float, default=120,
                    help="time allowed to create the objects before they all fall due")
    ap.add_argument("--validate", action="store_true",
                    help="links validate each new access token (the provider's /user, same latency)")
    ap.add_argument("--profile", metavar="SVG",
                    help="record the operator with py-spy during the storm (installed if missing); beside "
                         "a flame graph, its collapsed stacks in SVG.txt (bench/profile_top.py)")
    ap.add_argument("--profile-rate", type=int, default=100, help="py-spy samples a second")
    args = ap.parse_args()
    target = 1.3 * args.links * args.latency / args.concurrency
    deadline = max(600.0, 10 * target)
    with bench("storm", access_token_lifetime=8 * 3600, latency=args.latency) as b:
        b.provider(concurrency=args.concurrency, validate=args.validate)
        operator = b.start_operator()
        due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=args.setup_seconds)
        expiry = (due + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"creating {args.links} token Secrets and links ...", flush=True)
        setup_started = time.monotonic()
        refresh_tokens = b.links(args.links, expiry=expiry, validate=args.validate)
        created = time.monotonic() - setup_started
        wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
        if wait < 5:
            print(f"setup took too long ({created:.0f}s): raise --setup-seconds")
            return 1
        if b.sim.stats.token_calls:
            print("tokens were refreshed before they were due: the benchmark is void")
            return 1
        print(f"all created in {created:.1f}s; the storm starts in {wait:.0f}s", flush=True)
        time.sleep(wait)  # the instant every token falls due: the benchmark's start line
        started = time.monotonic()
        cpu_before, split_before = cpu_seconds(operator.pid), cpu_split(operator.pid)
        api_before = b.api_cpu_seconds()
        validations_before = b.sim.stats.validation_calls  # links first seen are validated at once
        requests_before = api_requests(b)
        profiler = b.profile(operator.pid, args.profile, rate=args.profile_rate) if args.profile else None
        while b.sim.stats.successful_refreshes < args.links:
            if operator.poll() is not None:
                print("the operator died; see", b.log)
                return 1
            if time.monotonic() - started > deadline:
                print("timed out")
                return 1
            time.sleep(0.05)
        exchanged = time.monotonic() - started

        def persisted() -> int:
            items = b.core.list_namespaced_secret(b.ns, label_selector="externalauth.io/provider=bench").items
            return sum(1 for s in items if s.metadata.name in refresh_tokens and
                       base64.b64decode(s.data["refresh_token"]).decode() != refresh_tokens[s.metadata.name])

        polls = 1
        while (done := persisted()) < args.links:
            polls += 1
            if time.monotonic() - started > deadline:
                print(f"timed out with {done} persisted")
                return 1
            time.sleep(0.2)
        total = time.monotonic() - started
        operator_cpu = cpu_seconds(operator.pid) - cpu_before
        system_cpu = cpu_split(operator.pid)[1] - split_before[1]
        api_cpu = b.api_cpu_seconds() - api_before
        if args.validate:  # the validations (and their status writes) come after the persists
            while b.sim.stats.validation_calls - validations_before < args.links \
                    and time.monotonic() - started < deadline:
                time.sleep(0.1)
        time.sleep(3)  # the last status writes and events
        calls = request_figures(requests_before, api_requests(b), own_lists=polls)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        stats = b.sim.stats
        print(json.dumps({
            "links": args.links, "latency_s": args.latency, "maxConcurrentRefreshes": args.concurrency,
            "setup_s": round(created, 2), "all_exchanged_in_s": round(exchanged, 2),
            "all_persisted_in_s": round(total, 2), "target_s": round(target, 2),
            "met": total <= target, "token_calls": stats.token_calls,
            "max_exchanges_per_refresh_token": stats.max_exchanges_per_refresh_token,
            "operator_cpu_s": round(operator_cpu, 2),
            "operator_cpu_ms_per_refresh": round(1000 * operator_cpu / args.links, 1),
            "operator_cpu_system_share": round(system_cpu / operator_cpu, 2) if operator_cpu else None,
            "validation": args.validate, "validation_calls_in_storm": stats.validation_calls - validations_before,
            "validation_calls_before_T": validations_before,
            "apiserver_etcd_cpu_ms_per_refresh": round(1000 * api_cpu / args.links, 1),
            "api_writes_per_refresh": round(calls["writes"] / args.links, 2),
            "api_reads_per_refresh": round(calls["reads"] / args.links, 2),
            "api_requests": calls["by_verb_resource_code"],
            "operator_rss_mib": round(rss_mib(operator.pid), 1),
            "machine": f"{os.cpu_count()} cores",
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
