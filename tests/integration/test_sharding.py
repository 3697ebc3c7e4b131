"""Scale-out (issue #12.4): replicas split the namespaces between them instead of every
replica deciding every link."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from externalauth.policy.sharding import shard_of
from tests.harness.simulator_fixtures import CLIENT_ID
from tests.harness.waiting import wait_for
from tests.harness.world import World, rfc3339


def test_two_shards_each_serve_only_their_namespaces(world: World, make_operator: Any, core_v1: Any) -> None:
    """--shard 0/2 and --shard 1/2 over two namespaces of different shards: every link is
    refreshed exactly once, by the replica whose shard holds its namespace."""
    other = next(f"{world.ns}-b{i}"[:63] for i in range(100)
                 if shard_of(f"{world.ns}-b{i}"[:63], 2) != shard_of(world.ns, 2))
    core_v1.create_namespace({"metadata": {"name": other}})
    try:
        world.make_provider()
        due = rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300))
        before = {}
        for ns in (world.ns, other):
            for i in range(3):
                grant = world.sim.issue_grant(CLIENT_ID)
                core_v1.create_namespaced_secret(ns, {
                    "metadata": {"name": f"tok-{i}", "labels": {"externalauth.io/provider": world.provider}},
                    "stringData": {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                                   "expiry": due}})
                world.co.create_namespaced_custom_object("externalauth.io", "v1alpha1", ns, "externalauthlinks", {
                    "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
                    "metadata": {"name": f"link-{i}"}, "spec": {"providerName": world.provider,
                                                                "secretName": f"tok-{i}"}})
                before[(ns, i)] = grant.refresh_token
        operators = {s: make_operator(namespaces=[world.ns, other], extra_args=("--shard", f"{s}/2"))
                     for s in (0, 1)}

        def refreshed() -> bool:
            return all(base64.b64decode(core_v1.read_namespaced_secret(f"tok-{i}", ns).data["refresh_token"]).decode()
                       != rt for (ns, i), rt in before.items())

        wait_for(refreshed, timeout=60, message="every link refreshed")
        stats = world.sim.stats
        assert (6, 1) == (stats.successful_refreshes, stats.max_exchanges_per_refresh_token)
        for s, op in operators.items():
            mine = world.ns if shard_of(world.ns, 2) == s else other
            theirs = other if mine == world.ns else world.ns
            logs = op.logs()
            assert f"ExternalAuthLink {mine}/link-0: refreshing" in logs
            assert f"ExternalAuthLink {theirs}/" not in logs
    finally:
        core_v1.delete_namespace(other)
