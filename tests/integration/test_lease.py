"""Contract §9.15: a refresh token is sent only within its claim's lease, whatever another
provider does to the operator (two replicas, the real control plane, two simulators)."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from typing import Any

import pytest

from tests.harness.waiting import wait_for
from tests.harness.world import World

DUE = 300  # seconds to expiry: inside the default refreshBefore (15m), so due at once
SLOW_LINKS = 600  # provider A's due links: ~300 per replica, > 3 rounds of a 64-thread pool
SLOW_ANSWER = 28.0  # seconds provider A takes to answer (the call deadline is 30 s)
FAST_LINKS = 5


@pytest.mark.timeout(900)
def test_a_slow_provider_cannot_make_another_providers_tokens_be_sent_twice(
        make_world: Any, make_operator: Any, namespace: str) -> None:
    """Provider A takes 28 s to answer (each call is cut by the 20 s read timeout) and allows 400
    calls at once; provider B answers at once and revokes a grant whose refresh token is used
    twice. Two replicas; A's 600 due links are being exchanged when B's 5 links become due. B's
    tokens are each exchanged once (none reused, no grant revoked), and B's links are Ready
    soon after: neither their token calls nor their validations wait behind A's calls."""
    slow = make_world(latency=SLOW_ANSWER)
    slow.provider = f"slow-{namespace}"[:63]
    fast = make_world(replay_detection=True)
    fast.provider = f"fast-{namespace}"[:63]
    slow.make_provider(maxConcurrentRefreshes=400)
    fast.make_provider(maxConcurrentRefreshes=5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: make_due_link(slow, f"slow-{i}"), range(SLOW_LINKS)))
        replicas = list(pool.map(lambda _: make_operator(namespaces=[namespace]), range(2)))
    try:
        check_fast_provider(slow, fast)
    finally:  # A's calls still queued would make a graceful stop wait minutes
        for replica in replicas:
            replica.stop(sig=signal.SIGKILL)


def check_fast_provider(slow: World, fast: World) -> None:
    # A's calls fill the replicas' provider threads before B's links exist.
    wait_for(lambda: slow.sim.stats.token_calls >= 128, timeout=120,
             message=lambda: f"128 calls in flight at A, saw {slow.sim.stats.token_calls}")
    created = time.monotonic()
    originals = {f"fast-{i}": make_due_link(fast, f"fast-{i}")["refresh_token"] for i in range(FAST_LINKS)}

    def settled() -> bool:
        stats = fast.sim.stats
        return stats.reuse_attempts > 0 or all(
            fast.secret_data(f"{name}-token").get("refresh_token") != token for name, token in originals.items())

    wait_for(settled, timeout=240, interval=1.0,
             message=lambda: f"B's {FAST_LINKS} links refreshed (B saw {fast.sim.stats.token_calls} calls)")
    refreshed = time.monotonic()
    print(f"B settled {refreshed - created:.1f}s after its links were created: {fast.sim.stats}")
    for name in originals:
        fast.wait_condition(name, "Ready", "True", timeout=60)
    ready = time.monotonic() - refreshed
    # Every call A's links queued has been sent: a B call queued behind them would have been too.
    wait_for(lambda: slow.sim.stats.token_calls >= SLOW_LINKS, timeout=400, interval=1.0,
             message=lambda: f"{SLOW_LINKS} calls at A, saw {slow.sim.stats.token_calls}")
    stats = fast.sim.stats
    print(f"B refreshed {refreshed - created:.1f}s after its links were created, Ready {ready:.1f}s later; "
          f"B: {stats.token_calls} token calls, {stats.reuse_attempts} reused, {stats.revoked_grants} revoked")
    assert (0, 0, FAST_LINKS) == (stats.reuse_attempts, stats.revoked_grants, stats.successful_refreshes)


def make_due_link(world: World, name: str) -> dict[str, str]:
    data = world.make_token_secret(f"{name}-token", expires_in=DUE)
    world.make_link(name, secret=f"{name}-token")
    return data
