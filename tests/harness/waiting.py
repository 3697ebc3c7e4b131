"""Wait on a condition with a deadline (never sleep until something probably happened)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1,
             message: str | Callable[[], str] = "condition") -> T:
    """Call ``probe`` until it returns something truthy; return it. Fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}; last value: {last!r}")
        time.sleep(interval)
