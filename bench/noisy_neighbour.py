#!/usr/bin/env python3
"""Noisy neighbour (contract §9.16, issue 18.2): one tenant cannot take a provider's
capacity from another.

    .venv/bin/python bench/noisy_neighbour.py [--junk 1000] [--due 100] [--latency 0.1] [--concurrency 10]

One provider (maxConcurrentRefreshes K, every answer after ``--latency`` seconds). Round 1,
alone: namespace B holds ``--due`` links whose tokens are due; the operator starts and B's
time to all-persisted is measured. Round 2, noisy: the operator is stopped, namespace A
gets ``--junk`` labelled Secrets with junk refresh tokens and no expiry, each with a link
(each a call not due by any expiry: the attack), B gets ``--due`` fresh due links, and the
operator starts again: B's time to all-persisted with A's flood, and A's token calls per
minute over the first minute. Target: B within 1.5 x its time alone; A's calls held to its
budget (50 at once, then 60 a minute).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import json
import sys
import time
from pathlib import Path

from common import bench

TARGET_RATIO = 1.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--junk", type=int, default=1000)
    ap.add_argument("--due", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--window", type=float, default=60.0, help="seconds over which A's calls are counted")
    args = ap.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    now = dt.datetime.now(dt.UTC)
    due = (now + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")  # within refreshBefore
    with bench("noisy", access_token_lifetime=8 * 3600, latency=args.latency) as b:
        b.provider(concurrency=args.concurrency)
        for ns in ("noisy-a", "noisy-b1", "noisy-b2"):
            b.core.create_namespace({"metadata": {"name": ns}})
        served = ("-n", "noisy-a", "-n", "noisy-b1", "-n", "noisy-b2", "--metrics-port", "0")

        def b_round(ns: str, *, junk: int) -> dict[str, float]:
            b.stop_operator()
            tokens = b.links(args.due, expiry=due, namespaces=[ns])
            if junk:
                make_junk(junk)
            calls0 = b.sim.stats.token_calls
            b.start_operator(*served)
            started = time.monotonic()
            while (done := persisted(ns, tokens)) < args.due:
                if time.monotonic() - started > 900:
                    raise SystemExit(f"timed out with {done} of {args.due} persisted in {ns}")
                time.sleep(0.2)
            took = time.monotonic() - started
            figures = {"b_all_persisted_s": round(took, 2)}
            if junk:
                time.sleep(max(0.0, args.window - (time.monotonic() - started)))
                a_calls = b.sim.stats.token_calls - calls0 - args.due
                figures["a_token_calls_first_window"] = a_calls
                figures["a_token_calls_per_minute"] = round(a_calls * 60 / args.window, 1)
            return figures

        def persisted(ns: str, tokens: dict[str, str]) -> int:
            items = b.core.list_namespaced_secret(ns, label_selector="externalauth.io/provider=bench").items
            return sum(1 for s in items if f"{ns}/{s.metadata.name}" in tokens and
                       base64.b64decode(s.data["refresh_token"]).decode() != tokens[f"{ns}/{s.metadata.name}"])

        def make_junk(count: int) -> None:
            def one(i: int) -> None:
                junk = base64.b64encode(f"junk-{i}".encode()).decode()
                b.core.create_namespaced_secret("noisy-a", {
                    "metadata": {"name": f"junk-{i}", "labels": {"externalauth.io/provider": "bench"}},
                    "data": {"access_token": junk, "refresh_token": junk}})
                b.co.create_namespaced_custom_object("externalauth.io", "v1alpha1", "noisy-a", "externalauthlinks", {
                    "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
                    "metadata": {"name": f"junk-{i}"},
                    "spec": {"providerName": "bench", "secretName": f"junk-{i}", "validate": False}})
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(one, range(count)))

        print(f"round 1: {args.due} due links in B alone ...", flush=True)
        alone = b_round("noisy-b1", junk=0)
        print(f"alone: {alone}; round 2: with {args.junk} junk links in A ...", flush=True)
        noisy = b_round("noisy-b2", junk=args.junk)
        ratio = noisy["b_all_persisted_s"] / max(alone["b_all_persisted_s"], 1e-9)
        print(json.dumps({
            "command": command, "junk_links_a": args.junk, "due_links_b": args.due, "latency_s": args.latency,
            "maxConcurrentRefreshes": args.concurrency, "b_alone": alone, "b_with_a": noisy,
            "b_ratio": round(ratio, 2), "target_ratio": TARGET_RATIO,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
