#!/usr/bin/env python3
"""Noisy neighbour (contract §9.16, issue 18.2): one tenant cannot take a provider's
capacity, nor the operator's, from another.

    .venv/bin/python bench/noisy_neighbour.py [--junk 1000] [--due 100] [--latency 0.1] [--concurrency 10]
                                              [--scenario both|start-up|live] [--flood-lead 2]

One provider (maxConcurrentRefreshes K, every answer after ``--latency`` seconds). Two
scenarios, each as a pair of rounds (B alone, B with A's flood); the figure of each is B's
time to all-persisted with the flood divided by its time alone (target: at most 1.5 x).

*Start-up* (the operator restarts with both sets present): round 1, alone: namespace B
holds ``--due`` links whose tokens are due; the operator starts and B's time to
all-persisted is measured from its start. Round 2, noisy: the operator is stopped,
namespace A gets ``--junk`` labelled Secrets with junk refresh tokens and no expiry, each
with a link (each a call not due by any expiry: the attack), B gets ``--due`` fresh due
links, and the operator starts again: B's time with A's flood, and A's token calls per
minute over the first minute (its budget: 50 at once, then 60 a minute).

*Live* (the operator is running; B's links exist; A's flood is created while B's tokens
fall due): the operator is restarted serving two other B namespaces and another A. Round
1, alone: B's ``--due`` links are created with tokens that all fall due at one instant T,
and B's time from T to all-persisted is measured. Round 2, noisy: the same for fresh B
links, and A's ``--junk`` junk links start being created ``--flood-lead`` seconds before
T, by a tenant user who may only create them there (16 client threads in a process of
their own, as fast as the API server takes them: in this process they would slow the
simulator, which answers from it; as the bench's admin, exempt from the API server's
priority and fairness, they would not be a tenant's flood).

Each round also prints the operator's API writes (link status writes, Secret writes,
events) by the time B's first and last token were persisted: what B's refreshes waited
behind. Only the ratio within one run means anything on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import json
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Bench, Requests, api_requests, bench, k8s, k8s_config

TARGET_RATIO = 1.5
REFRESH_BEFORE = dt.timedelta(minutes=15)  # the links' default refreshBefore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--junk", type=int, default=1000)
    ap.add_argument("--due", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--window", type=float, default=60.0, help="seconds over which A's calls are counted")
    ap.add_argument("--scenario", choices=("both", "start-up", "live"), default="both")
    ap.add_argument("--flood-lead", type=float, default=2.0,
                    help="live: seconds before B's tokens fall due that A's flood starts being created")
    ap.add_argument("--setup-seconds", type=float, default=30.0,
                    help="live: time allowed to create B's links before their tokens fall due")
    args = ap.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    out: dict[str, Any] = {
        "command": command, "junk_links_a": args.junk, "due_links_b": args.due, "latency_s": args.latency,
        "maxConcurrentRefreshes": args.concurrency, "target_ratio": TARGET_RATIO}
    with bench("noisy", access_token_lifetime=8 * 3600, latency=args.latency) as b:
        b.provider(concurrency=args.concurrency)
        for ns in ("noisy-a", "noisy-b1", "noisy-b2", "noisy-a2", "noisy-b3", "noisy-b4"):
            b.core.create_namespace({"metadata": {"name": ns}})
        if args.scenario in ("both", "start-up"):
            out["start_up"] = start_up(b, args)
        if args.scenario in ("both", "live"):
            out["live"] = live(b, args)
    print(json.dumps(out, indent=2))
    return 0


def start_up(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    served = ("-n", "noisy-a", "-n", "noisy-b1", "-n", "noisy-b2", "--metrics-port", "0")
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")  # within refreshBefore

    def b_round(ns: str, *, junk: int) -> dict[str, Any]:
        b.stop_operator()
        tokens = b.links(args.due, expiry=due, namespaces=[ns])
        if junk:
            make_junk(b.core, b.co, "noisy-a", junk)
        calls0, exchanged0 = b.sim.stats.token_calls, b.sim.stats.successful_refreshes
        requests0 = api_requests(b)
        b.start_operator(*served)
        started = time.monotonic()
        figures = wait_persisted(b, ns, tokens, started=started, requests0=requests0, count=args.due,
                                 exchanged0=exchanged0)
        if junk:
            time.sleep(max(0.0, args.window - (time.monotonic() - started)))
            a_calls = b.sim.stats.token_calls - calls0 - args.due
            figures["a_token_calls_first_window"] = a_calls
            figures["a_token_calls_per_minute"] = round(a_calls * 60 / args.window, 1)
        return figures

    return two_rounds(b_round, ("noisy-b1", "noisy-b2"), junk=args.junk,
                      said=(f"start-up round 1: {args.due} due links in B alone",
                            f"start-up round 2: with {args.junk} junk links in A"))


def live(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    tenant = tenant_kubeconfig(b, "noisy-a2")
    b.stop_operator()
    b.start_operator("-n", "noisy-a2", "-n", "noisy-b3", "-n", "noisy-b4", "--metrics-port", "0")

    def b_round(ns: str, *, junk: int) -> dict[str, Any]:
        at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=args.setup_seconds)
        expiry = (at + REFRESH_BEFORE).strftime("%Y-%m-%dT%H:%M:%SZ")
        calls0 = b.sim.stats.token_calls
        tokens = b.links(args.due, expiry=expiry, namespaces=[ns])
        if b.sim.stats.token_calls != calls0:
            raise SystemExit("B's tokens were refreshed before they were due: the round is void")

        def seconds_to(instant: dt.datetime) -> float:
            return (instant - dt.datetime.now(dt.UTC)).total_seconds()

        flood: Any = None
        if junk:
            # In a process of its own (started and warmed up now): the simulator answers
            # from this one, and 16 client threads here would slow the provider itself.
            pool = multiprocessing.get_context("spawn").Pool(1)
            pool.apply(flood_process, (tenant, "noisy-a2", 0))
            if seconds_to(at) < args.flood_lead + 2:
                raise SystemExit(f"B's links took too long to create: raise --setup-seconds ({args.setup_seconds})")
            time.sleep(seconds_to(at) - args.flood_lead)
            flood = pool.apply_async(flood_process, (tenant, "noisy-a2", junk))
        wait = seconds_to(at)
        if wait < 1:
            raise SystemExit(f"B's links took too long to create: raise --setup-seconds ({args.setup_seconds})")
        exchanged0 = b.sim.stats.successful_refreshes  # (B's tokens are not due yet)
        time.sleep(wait)  # the instant B's tokens fall due: the round's start line
        started = time.monotonic()
        figures = wait_persisted(b, ns, tokens, started=started, requests0=api_requests(b), count=args.due,
                                 exchanged0=exchanged0)
        if flood is not None:
            figures["a_token_calls_until_b_done"] = b.sim.stats.token_calls - calls0 - args.due
            figures["a_flood_created_in_s"] = round(flood.get(timeout=900), 2)
            figures["a_flood_started_before_b_due_s"] = args.flood_lead
            pool.close()
            pool.join()
        return figures

    return two_rounds(b_round, ("noisy-b3", "noisy-b4"), junk=args.junk,
                      said=(f"live round 1: {args.due} links in B fall due, alone",
                            f"live round 2: with {args.junk} junk links created in A meanwhile"))


def two_rounds(b_round: Callable[..., dict[str, Any]], namespaces: tuple[str, str], *, junk: int,
               said: tuple[str, str]) -> dict[str, Any]:
    """B alone in the first namespace, then B with A's ``junk`` links in the second; the
    figures of both and the ratios with A / alone."""
    print(f"{said[0]} ...", flush=True)
    alone = b_round(namespaces[0], junk=0)
    print(f"alone: {alone}; {said[1]} ...", flush=True)
    noisy = b_round(namespaces[1], junk=junk)
    print(f"with A: {noisy}", flush=True)
    return {"b_alone": alone, "b_with_a": noisy, "b_ratio": ratio(noisy, alone),
            "b_ratio_exchanged": ratio(noisy, alone, "b_all_exchanged_s")}


def ratio(noisy: dict[str, Any], alone: dict[str, Any], what: str = "b_all_persisted_s") -> float:
    return round(noisy[what] / max(alone[what], 1e-9), 2)


def wait_persisted(b: Bench, ns: str, tokens: dict[str, str], *, started: float, requests0: Requests,
                   count: int, exchanged0: int) -> dict[str, Any]:
    """B's time from ``started`` to its first and its last token persisted (seen by listing
    B's Secrets every 0.2 s), to its last exchange (the simulator's count, every 10 ms; B's
    only, since A's junk tokens never succeed; counted from ``exchanged0``), with the
    operator's API writes by each moment."""
    figures: dict[str, Any] = {}
    first: dict[str, int] = {}
    # B's exchanges as the simulator (in this process) counts them, polled without the API
    # server: a list of B's Secrets waits behind the flood's creations at the API server.
    stop = threading.Event()

    def watch_exchanges() -> None:
        while not stop.is_set():
            if b.sim.stats.successful_refreshes - exchanged0 >= count:
                figures["b_all_exchanged_s"] = round(time.monotonic() - started, 2)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_exchanges, daemon=True)
    watcher.start()
    while (done := persisted(b, ns, tokens)) < count:
        if done and not first:
            figures["b_first_persisted_s"] = round(time.monotonic() - started, 2)
            first = counters(b, requests0)
        if time.monotonic() - started > 900:
            raise SystemExit(f"timed out with {done} of {count} persisted in {ns}")
        time.sleep(0.2)
    figures["b_all_persisted_s"] = round(time.monotonic() - started, 2)
    watcher.join(timeout=5)
    stop.set()
    figures.setdefault("b_first_persisted_s", figures["b_all_persisted_s"])
    figures |= {f"{k}_by_b_first": v for k, v in (first or counters(b, requests0)).items()}
    figures |= {f"{k}_by_b_all": v for k, v in counters(b, requests0).items()}
    return figures


def counters(b: Bench, since: Requests) -> dict[str, int]:
    """The operator's API writes since ``since``, by kind (what B's refreshes wait behind;
    the bench's own creations are POSTs of Secrets and links, not counted here)."""
    delta = api_requests(b) - since
    return {"link_status_writes": sum(n for (v, r, _), n in delta.items()
                                      if v == "PATCH" and r == "externalauthlinks/status"),
            "secret_writes": sum(n for (v, r, _), n in delta.items() if v == "PATCH" and r == "secrets"),
            "events": sum(n for (v, r, _), n in delta.items() if v in ("POST", "PATCH") and r == "events")}


def persisted(b: Bench, ns: str, tokens: dict[str, str]) -> int:
    items = b.core.list_namespaced_secret(ns, label_selector="externalauth.io/provider=bench").items
    return sum(1 for s in items if f"{ns}/{s.metadata.name}" in tokens and
               base64.b64decode(s.data["refresh_token"]).decode() != tokens[f"{ns}/{s.metadata.name}"])


def tenant_kubeconfig(b: Bench, namespace: str) -> str:
    """A tenant of ``namespace``, who may create Secrets and links there and nothing else:
    the API server's priority and fairness treat its flood as one user's (the bench's
    admin would be exempt), as it would a real tenant's."""
    user = f"tenant-{namespace}"
    b.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": user, "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                   {"apiGroups": ["externalauth.io"], "resources": ["externalauthlinks"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": user, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}]}))
    return str(b.cp.mint_user(user))


def flood_process(kubeconfig: str, namespace: str, count: int) -> float:
    """:func:`make_junk` in another process, with a client of its own: how long it took."""
    started = time.monotonic()
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    make_junk(k8s.CoreV1Api(api), k8s.CustomObjectsApi(api), namespace, count)
    return time.monotonic() - started


def make_junk(core: Any, co: Any, namespace: str, count: int) -> None:
    """``count`` labelled Secrets with a junk refresh token and no expiry, each with a link."""
    def one(i: int) -> None:
        junk = base64.b64encode(f"junk-{i}".encode()).decode()
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": f"junk-{i}", "labels": {"externalauth.io/provider": "bench"}},
            "data": {"access_token": junk, "refresh_token": junk}})
        co.create_namespaced_custom_object("externalauth.io", "v1alpha1", namespace, "externalauthlinks", {
            "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
            "metadata": {"name": f"junk-{i}"},
            "spec": {"providerName": "bench", "secretName": f"junk-{i}", "validate": False}})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


if __name__ == "__main__":
    sys.exit(main())
