"""Which replica serves which links when the work is split (``externalauth run --shard
I/N``). Pure.

The unit of sharding is the namespace: a link and its Secret always live in the same
namespace, so one replica holds both in its caches and no other replica looks at them.
A stable hash (not Python's randomised ``hash``) makes every replica agree. A link whose
namespace changes hands when N changes stays safe: the claim on its Secret still
guarantees one exchange per refresh token while two replicas overlap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

_SHARD = re.compile(r"^(\d{1,4})/(\d{1,4})$")


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def serves(self, namespace: str) -> bool:
        return self.count == 1 or shard_of(namespace, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(namespace: str, count: int) -> int:
    """The shard (0 .. count-1) that serves ``namespace``."""
    digest = hashlib.sha256(namespace.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse(text: str) -> Shard:
    """``I/N`` with 0 <= I < N <= 1000; ValueError with a message otherwise."""
    match = _SHARD.match(text.strip())
    if match is None:
        raise ValueError(f"{text[:20]!r} is not a shard like 0/3 (this replica's index / the replica count)")
    index, count = int(match.group(1)), int(match.group(2))
    if not 0 < count <= 1000 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be 0 to {max(0, count - 1)}, the count 1 to 1000")
    return Shard(index, count)
