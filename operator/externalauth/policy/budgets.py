"""Budgets of calls that are not due (contract §9.16): a token bucket per namespace per
provider. Pure: ``now`` is passed in.

A refresh is *due* when the token's expiry says so; those are bounded by the token
lifetime (§9.12) and never budgeted. The others cost a namespace's budget: the first
refresh of a Secret without an ``expiry`` (to learn it) and refresh requests through the
annotation. A tenant who writes 1,000 labelled Secrets with junk refresh tokens and no
expiry, or edits them in a loop, then makes at most ``burst`` calls at once and ``rate``
a second after that with the OAuth app's client secret, however many links they create;
other namespaces' budgets are their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

#: Calls a namespace may make at once at one provider without waiting.
BURST = 50
#: ... and the rate at which its budget fills up again (calls per second).
RATE = 1.0


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A namespace's budget as a "theoretical arrival time" (the generic cell rate
    algorithm): ``until`` is when the budget would be whole again had no call been booked
    past it. Each call is booked a moment: at once while the burst lasts, then one every
    ``1/rate`` seconds, in the order they asked; so a flood of 1,000 waits in line at the
    rate instead of asking again and again."""

    until: dt.datetime


def book(bucket: Bucket | None, *, now: dt.datetime, burst: int = BURST,
         rate: float = RATE) -> tuple[Bucket, dt.datetime]:
    """Book one call: (the bucket after, the moment the call may be made: ``now`` or later)."""
    step = dt.timedelta(seconds=1.0 / rate)
    until = max(now, bucket.until if bucket is not None else now)
    allowed = max(now, until - burst * step + step)
    return Bucket(until + step), allowed


def idle(bucket: Bucket, *, now: dt.datetime) -> bool:
    """Is the budget whole again (the bucket can be forgotten)?"""
    return bucket.until <= now
