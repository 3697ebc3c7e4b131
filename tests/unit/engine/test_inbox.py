"""The inbox between the watch threads and the event loop: batches, and a bound."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from externalauth.engine.inbox import Inbox


def test_a_full_inbox_makes_the_watch_thread_wait_for_the_loop() -> None:
    """A first listing of 100,000 objects can outpace the loop, and an unbounded inbox held
    every raw object (managedFields and all) until the loop slimmed it into the caches.
    The inbox holds at most ``limit`` events; the thread waits, then every event arrives,
    in order."""
    loop = asyncio.new_event_loop()
    got: list[int] = []
    all_arrived = loop.create_future()

    def handle(kind: str, obj: Any) -> None:
        got.append(obj["n"])
        if len(got) == 10:
            all_arrived.set_result(None)

    inbox = Inbox(loop, limit=3)
    send = inbox.sender(handle)
    thread = threading.Thread(target=lambda: [send("ADDED", {"n": i}) for i in range(10)])  # type: ignore[typeddict-unknown-key]
    thread.start()
    assert inbox.wait_for_waiting(1, timeout=10), "the thread never waited for room"
    assert (3, True) == (len(inbox), thread.is_alive())  # waiting for room, not piling up
    loop.run_until_complete(asyncio.wait_for(all_arrived, 10))
    thread.join(5)
    assert list(range(10)) == got
    loop.close()


def test_a_closed_inbox_releases_a_waiting_thread() -> None:
    loop = asyncio.new_event_loop()
    inbox = Inbox(loop, limit=1)
    send = inbox.sender(lambda kind, obj: None)
    thread = threading.Thread(target=lambda: [send("ADDED", {}) for _ in range(3)])
    thread.start()
    assert inbox.wait_for_waiting(1, timeout=10), "the thread never waited for room"
    inbox.close()
    thread.join(5)
    assert (False, 1) == (thread.is_alive(), len(inbox))
    loop.close()
