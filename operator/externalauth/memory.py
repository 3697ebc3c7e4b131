"""Where the operator's memory goes, for the benchmarks: with ``PYTHONTRACEMALLOC=N`` set
(N frames kept per allocation) and ``EXTERNALAUTH_MEMORY_REPORT=path``, SIGUSR1 writes the
live Python allocations, summed by the component that made them, to ``path`` as JSON.

A component is the innermost frame of ours or of kopf in the allocation's traceback
(``externalauth/kube/watching.py`` for the objects a watch decoded, which the caches keep),
else the innermost frame's file. Off unless both are set; costs nothing then."""

from __future__ import annotations

import collections
import json
import os
import signal
import tracemalloc
from types import FrameType

REPORT_ENV = "EXTERNALAUTH_MEMORY_REPORT"
MARKERS = ("/externalauth/", "/kopf/")


def _component(trace: tracemalloc.Trace) -> str:
    frames = trace.traceback
    for frame in reversed(frames):  # innermost last in tracemalloc's default order
        for marker in MARKERS:
            at = frame.filename.rfind(marker)
            if at >= 0:
                return frame.filename[at + 1:]
    name = frames[-1].filename if len(frames) else "?"
    return "other: " + name.rsplit("/", 2)[-2] + "/" + name.rsplit("/", 1)[-1] if "/" in name else name


def summary(snapshot: tracemalloc.Snapshot, top: int = 40) -> dict[str, int]:
    sizes: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        sizes[_component(trace)] += trace.size
    out = dict(sizes.most_common(top))
    out["total"] = sum(sizes.values())
    return out


def install() -> None:
    path = os.environ.get(REPORT_ENV)
    if not path or not tracemalloc.is_tracing():
        return

    def report(_signum: int, _frame: FrameType | None) -> None:
        data = summary(tracemalloc.take_snapshot())
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)  # whole or absent

    signal.signal(signal.SIGUSR1, report)
