"""Two replicas serving the same namespace (all-active, no sharding) write each link's status
a bounded number of times per refresh, not back and forth (contract §10): the status versions
of every link are read from a watch of the real API server while their tokens fall due."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from kubernetes import watch

from tests.harness.waiting import wait_for
from tests.harness.world import G, V, World

LINKS = 6
#: Status writes per link for one refresh: the refreshing replica's, and at most one by the
#: other replica (it may see the new token before the refresher's status and say Pending).
MAX_WRITES_PER_REFRESH = 2


class StatusVersions:
    """Every distinct status of the world's links, in the order the API server stored them."""

    def __init__(self, world: World) -> None:
        self.by_link: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._stop = threading.Event()
        self._world = world
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        w = watch.Watch()
        while not self._stop.is_set():
            for ev in w.stream(self._world.co.list_namespaced_custom_object, G, V, self._world.ns,
                               "externalauthlinks", timeout_seconds=5):
                obj = ev["object"]
                status = obj.get("status") or {}
                seen = self.by_link[obj["metadata"]["name"]]
                if status and (not seen or seen[-1] != status):
                    seen.append(status)
                if self._stop.is_set():
                    w.stop()
                    break

    def stop(self) -> None:
        self._stop.set()


def _settled(status: dict[str, Any]) -> bool:
    reasons = {c["type"]: c["reason"] for c in status.get("conditions") or []}
    return "lastRefreshTime" in status and reasons.get("Refreshable") == "Refreshed" \
        and reasons.get("Validated") == "Valid"


def test_two_replicas_write_a_links_status_a_bounded_number_of_times_per_refresh(
        make_world: Any, make_operator: Any, namespace: str) -> None:
    make_operator(namespaces=[namespace])
    make_operator(namespaces=[namespace])
    world = make_world()
    world.make_provider()
    versions = StatusVersions(world)
    try:
        for i in range(LINKS):  # validated now, due in ~15 s
            world.make_token_secret(f"tok{i}", expires_in=15 * 60 + 15)
            world.make_link(f"link{i}", secret=f"tok{i}")
        for i in range(LINKS):
            world.wait_condition(f"link{i}", "Validated", "True", "Valid")
        before = world.sim.stats.validation_calls
        initial = {name: len(seen) for name, seen in versions.by_link.items()}  # before they fall due
        wait_for(lambda: all(_settled(world.link(f"link{i}").get("status") or {}) for i in range(LINKS)),
                 timeout=60, message=lambda: f"every link refreshed and validated: {dict(versions.by_link)}")
        wait_for(lambda: all(versions.by_link[f"link{i}"] and _settled(versions.by_link[f"link{i}"][-1])
                             for i in range(LINKS)), timeout=10, message="the watch to see the settled statuses")
    finally:
        versions.stop()
    assert LINKS == world.sim.stats.token_calls
    assert LINKS == world.sim.stats.validation_calls - before  # each new token validated once
    for i in range(LINKS):
        statuses = versions.by_link[f"link{i}"]
        writes = len(statuses) - initial[f"link{i}"]
        assert writes <= MAX_WRITES_PER_REFRESH, f"link{i}: {writes} status writes for one refresh: {statuses}"
