"""Sharding by namespace (``externalauth run --shard I/N``): pure rules."""

from __future__ import annotations

import collections

import pytest

from externalauth.policy import sharding
from externalauth.policy.sharding import Shard


def test_every_namespace_has_exactly_one_shard_and_all_replicas_agree() -> None:
    namespaces = [f"user-{i}" for i in range(3000)]
    owners = [[s for s in range(3) if Shard(s, 3).serves(ns)] for ns in namespaces]
    assert all(len(o) == 1 for o in owners)
    assert [sharding.shard_of(ns, 3) for ns in namespaces] == [o[0] for o in owners]


def test_shards_are_roughly_balanced() -> None:
    counts = collections.Counter(sharding.shard_of(f"ws-{i}", 4) for i in range(4000))
    assert all(800 <= counts[s] <= 1200 for s in range(4)), counts


def test_the_hash_is_stable_across_processes() -> None:
    """Not Python's randomised hash(): a value pinned here must never change."""
    assert 2 == sharding.shard_of("alice", 3)


def test_one_shard_serves_everything() -> None:
    assert Shard().serves("anything")


@pytest.mark.parametrize(("text", "shard"), [
    pytest.param("0/1", Shard(0, 1), id="one replica"),
    pytest.param("2/3", Shard(2, 3), id="the last of three"),
])
def test_shards_parse(text: str, shard: Shard) -> None:
    assert shard == sharding.parse(text)


@pytest.mark.parametrize("text", ["3/3", "1/0", "-1/2", "a/b", "1", "1/2/3", "0/1001"],
                         ids=["index past the count", "zero replicas", "negative", "not numbers", "no count",
                              "three parts", "too many replicas"])
def test_bad_shards_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        sharding.parse(text)
