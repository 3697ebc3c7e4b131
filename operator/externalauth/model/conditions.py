"""metav1.Condition lists (contract §4). Pure: ``now`` is passed in.

A condition keeps its ``lastTransitionTime`` unless its status flips, carries
``observedGeneration``, and the list compares equal when nothing changed, so
that callers write the status only on change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TypedDict

from externalauth.model.durations import format_time


class ConditionBody(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def find(conditions: Iterable[ConditionBody], kind: str) -> ConditionBody | None:
    for c in conditions:
        if c.get("type") == kind:
            return c
    return None


def merge(
    existing: Sequence[ConditionBody],
    desired: Iterable[Condition],
    *,
    now: dt.datetime,
    generation: int,
) -> list[ConditionBody]:
    """Return the new list: ``desired`` applied over ``existing``, order kept, others kept."""
    out: list[ConditionBody] = [dict(c) for c in existing]  # type: ignore[misc]
    stamp = None  # format_time(now), once, if a condition changes status
    for want in desired:
        old = find(out, want.type)
        if old is not None and old.get("status") == want.status and old.get("lastTransitionTime"):
            since = old["lastTransitionTime"]
        else:
            since = stamp = stamp or format_time(now)
        body: ConditionBody = {
            "type": want.type,
            "status": want.status,
            "reason": want.reason,
            "message": want.message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
        if old is None:
            out.append(body)
        else:
            out[out.index(old)] = body
    return out
