"""When to refresh, and how long to back off. Pure: ``now`` and seeds are passed in."""

from __future__ import annotations

import datetime as dt
import hashlib

MAX_SPREAD = 0.10  # refresh up to 10% of the token lifetime early, to spread load


def fraction(seed: str) -> float:
    """A deterministic number in [0, 1) from a seed string (stable across restarts)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def due_at(
    *,
    expiry: dt.datetime | None,
    refresh_before: dt.timedelta,
    issued_at: dt.datetime | None,
    seed: str,
) -> dt.datetime | None:
    """When a refresh is due: ``expiry - refreshBefore``, minus a jitter of at most 10%
    of the token's lifetime (known only when we saw it issued). Never later.
    ``None`` means "no expiry known"; the caller refreshes at once to learn it."""
    if expiry is None:
        return None
    due = expiry - refresh_before
    if issued_at is not None and issued_at < expiry:
        lifetime = expiry - issued_at
        due -= lifetime * (MAX_SPREAD * fraction(seed))
    return due


def backoff(
    *,
    failures: int,
    seed: str,
    base: float = 2.0,
    cap: float = 300.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): exponential with
    ±20% jitter, capped, and never sooner than the provider's ``Retry-After``."""
    exp = min(cap, base * (2 ** max(0, failures - 1)))
    wait = exp * (0.8 + 0.4 * fraction(f"{seed}/{failures}"))
    if retry_after is not None:
        wait = max(wait, min(retry_after, 3600.0))
    return float(wait)
