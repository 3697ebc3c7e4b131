"""Contract §9.15: a refresh token is sent only within its claim's lease, whatever another
provider does to the operator (two replicas, the real control plane, two simulators)."""

from __future__ import annotations

import base64
import concurrent.futures
import signal
import time
from typing import Any

import pytest

from externalauth.model.names import CLAIM_ANNOTATION
from tests.harness.waiting import wait_for
from tests.harness.world import World

DUE = 300  # seconds to expiry: inside the default refreshBefore (15m), so due at once
SLOW_LINKS = 600  # provider A's due links
SLOW_CLAIMED = 400  # ... claimed by the first replica before B's links exist: > 5 rounds of a 64-thread pool
SLOW_ANSWER = 28.0  # seconds provider A takes to answer (the call deadline is 30 s)
FAST_LINKS = 5


@pytest.mark.timeout(900)
def test_a_slow_provider_cannot_make_another_providers_tokens_be_sent_twice(
        make_world: Any, make_operator: Any, namespace: str) -> None:
    """Provider A takes 28 s to answer (each call is cut by the 20 s read timeout) and allows 400
    calls at once; provider B answers at once and revokes a grant whose refresh token is used
    twice. A first replica is exchanging A's 600 due links when B's 5 links become due and it
    claims them; then a second replica starts. B's tokens are each exchanged once (none
    reused, no grant revoked), and B's links are Ready soon after: neither their token calls
    nor their validations wait behind A's calls.

    The replay it guards against (issue 17): B's calls wait behind A's (one shared pool of 64
    provider threads, as before per-provider threads) longer than their claims' 60 s lease;
    the second replica takes the expired claims and sends the same refresh tokens. The test
    watches B's claims; for every B Secret whose claim the other replica took over before
    its refresh token was spent, a second call with that token is on its way. Once B is
    refreshed or its claims taken over, A answers at once, the queues drain, and the test
    waits for those calls before it counts B's reuse."""
    slow = make_world(latency=SLOW_ANSWER)
    slow.provider = f"slow-{namespace}"[:63]
    fast = make_world(replay_detection=True)
    fast.provider = f"fast-{namespace}"[:63]
    slow.make_provider(maxConcurrentRefreshes=400, validateURL="")
    fast.make_provider(maxConcurrentRefreshes=5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: make_due_link(slow, f"slow-{i}"), range(SLOW_LINKS)))
    replicas = [make_operator(namespaces=[namespace])]
    try:
        check_fast_provider(slow, fast, second=lambda: replicas.append(make_operator(namespaces=[namespace])))
    finally:  # A's calls still queued would make a graceful stop wait minutes
        for replica in replicas:
            replica.stop(sig=signal.SIGKILL)


class Claims:
    """B's Secrets as the test sees them: the first replica seen claiming each, and those
    whose claim another replica took over while the refresh token was still unspent."""

    def __init__(self, world: World, originals: dict[str, str]) -> None:
        self.world, self.originals = world, originals
        self.first: dict[str, str] = {}
        self.taken_over: set[str] = set()
        self.refreshed: set[str] = set()

    def look(self) -> None:
        for name, token in self.originals.items():
            secret = self.world.secret(f"{name}-token")
            if base64.b64decode((secret.data or {}).get("refresh_token", "")).decode() != token:
                self.refreshed.add(name)
                continue
            holder = ((secret.metadata.annotations or {}).get(CLAIM_ANNOTATION) or "").rpartition(";")[0]
            if holder and holder != self.first.setdefault(name, holder):
                self.taken_over.add(name)

    def claimed(self) -> bool:
        """Every B link is refreshed, or has been claimed."""
        self.look()
        return all(name in self.refreshed or name in self.first for name in self.originals)

    def settled(self) -> bool:
        """Every B link is refreshed, or its claim was taken over (a replay is set up)."""
        self.look()
        return all(name in self.refreshed or name in self.taken_over for name in self.originals)


def claimed_secrets(world: World) -> set[str]:
    """The world's token Secrets that carry a claim now (one list call)."""
    items = world.core.list_namespaced_secret(world.ns, label_selector=f"externalauth.io/provider={world.provider}")
    return {s.metadata.name for s in items.items if CLAIM_ANNOTATION in (s.metadata.annotations or {})}


def check_fast_provider(slow: World, fast: World, *, second: Any) -> None:
    # The first replica has claimed 400 of A's links (their calls sent or queued) before
    # B's links exist: with one shared pool of 64 provider threads, 336 A calls of 20 s
    # each would be queued ahead of B's, longer than a claim's 60 s lease.
    seen: set[str] = set()

    def claimed_enough() -> bool:
        seen.update(claimed_secrets(slow))
        return len(seen) >= SLOW_CLAIMED

    wait_for(claimed_enough, timeout=180, interval=1.0,
             message=lambda: f"{SLOW_CLAIMED} A Secrets claimed, saw {len(seen)}")
    created = time.monotonic()
    originals = {f"fast-{i}": make_due_link(fast, f"fast-{i}")["refresh_token"] for i in range(FAST_LINKS)}
    claims = Claims(fast, originals)
    wait_for(claims.claimed, timeout=120, interval=0.5, message="B's links claimed by the first replica")
    second()
    wait_for(claims.settled, timeout=240, interval=0.5,
             message=lambda: f"B's links refreshed or taken over (B saw {fast.sim.stats.token_calls} calls)")
    refreshed = time.monotonic()
    print(f"B settled {refreshed - created:.1f}s after its links were created, {len(claims.taken_over)} "
          f"claims taken over: {fast.sim.stats}")
    slow.sim.latency = 0.0  # A answers at once from now on: every queued call drains
    # One call per B link, and one more per claim another replica took over on an unspent token.
    expected = FAST_LINKS + len(claims.taken_over)
    wait_for(lambda: fast.sim.stats.token_calls >= expected, timeout=240, interval=0.5,
             message=lambda: f"{expected} token calls at B, saw {fast.sim.stats.token_calls}")
    stats = fast.sim.stats
    print(f"B: {stats.token_calls} token calls, {stats.reuse_attempts} reused, {stats.revoked_grants} revoked")
    assert (0, 0, FAST_LINKS) == (stats.reuse_attempts, stats.revoked_grants, stats.successful_refreshes)
    for name in originals:
        fast.wait_condition(name, "Ready", "True", timeout=60)
    ready = time.monotonic() - refreshed
    print(f"B refreshed {refreshed - created:.1f}s after its links were created, Ready {ready:.1f}s later")
    stats = fast.sim.stats
    assert (0, 0, FAST_LINKS) == (stats.reuse_attempts, stats.revoked_grants, stats.successful_refreshes)


def make_due_link(world: World, name: str) -> dict[str, str]:
    data = world.make_token_secret(f"{name}-token", expires_in=DUE)
    world.make_link(name, secret=f"{name}-token")
    return data
