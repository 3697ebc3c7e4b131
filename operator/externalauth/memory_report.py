"""Where the operator's memory goes, for the benchmarks: with ``EXTERNALAUTH_MEMORY_REPORT``
set to a path, SIGUSR1 writes the deep size of each of the engine's per-link structures
(the watch caches, their indexes, the scheduler, the per-link memory), the process's
resident memory, its asyncio tasks and threads to that path as JSON. Everything not
listed is the interpreter, the imported modules, thread stacks and the allocator's free
lists. Off unless set."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

REPORT_ENV = "EXTERNALAUTH_MEMORY_REPORT"


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of ``root`` and everything it reaches that was not counted yet (modules,
    classes and functions are not followed: they are code, not data)."""
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType) or callable(obj):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def components(engine: Any) -> dict[str, object]:
    seen: set[int] = set()
    caches, scheduler = engine.caches, engine.scheduler
    parts = {
        "cache: links": caches.links,
        "cache: token Secrets and client Secrets": caches.secrets,
        "cache: providers": caches.providers,
        "cache indexes": (caches._links_by_secret, caches._links_by_provider, caches._providers_by_secret),
        "cache: parsed link specs and tokens": (caches._link_specs._known, caches._secret_tokens._known),
        "scheduler": (scheduler._heap, scheduler._when, scheduler._running, scheduler._rerun),
        "per-link memory (engine, recorder)": (engine.memory, engine._warned_rt, engine.recorder._ready_gauge),
        "secret writer locks": engine.writer.__dict__,
    }
    out: dict[str, object] = {name: deep_size(value, seen) for name, value in parts.items()}
    out["links"] = len(caches.links)
    out["secrets"] = len(caches.secrets)
    return out


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def install(engine: Callable[[], Any]) -> None:
    """On SIGUSR1, report about ``engine()`` (None before it has started)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return

    def report(_signum: int, _frame: FrameType | None) -> None:
        running = engine()
        data = components(running) if running is not None else {}
        data["rss"] = rss_bytes()
        try:
            data["tasks"] = len(asyncio.all_tasks())  # the signal is handled on the loop's thread
        except RuntimeError:
            data["tasks"] = 0  # no loop running yet
        data["threads"] = threading.active_count()
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)  # whole or absent

    signal.signal(signal.SIGUSR1, report)
