"""The inbox between the watch threads and the event loop: batches, and a bound."""

from __future__ import annotations

import asyncio
import threading
import time

from externalauth.engine.starting import Inbox


def test_a_full_inbox_makes_the_watch_thread_wait_for_the_loop() -> None:
    """A first listing of 100,000 objects can outpace the loop, and an unbounded inbox held
    every raw object (managedFields and all) until the loop slimmed it into the caches.
    The inbox holds at most ``limit`` events; the thread waits, then every event arrives,
    in order."""
    loop = asyncio.new_event_loop()
    got: list[int] = []
    inbox = Inbox(loop, limit=3)
    send = inbox.sender(lambda kind, obj: got.append(obj["n"]))  # type: ignore[index]
    thread = threading.Thread(target=lambda: [send("ADDED", {"n": i}) for i in range(10)])  # type: ignore[typeddict-item]
    thread.start()
    deadline = time.monotonic() + 10
    while len(inbox._events) < 3:
        assert time.monotonic() < deadline, "the thread never filled the inbox"
        time.sleep(0.01)
    time.sleep(0.05)
    assert (3, True) == (len(inbox._events), thread.is_alive())  # waiting for room, not piling up
    while len(got) < 10:
        assert time.monotonic() < deadline, f"only {got} arrived"
        loop.run_until_complete(asyncio.sleep(0.01))
    thread.join(5)
    assert list(range(10)) == got
    loop.close()


def test_a_closed_inbox_releases_a_waiting_thread() -> None:
    loop = asyncio.new_event_loop()
    inbox = Inbox(loop, limit=1)
    send = inbox.sender(lambda kind, obj: None)
    thread = threading.Thread(target=lambda: [send("ADDED", {}) for _ in range(3)])
    thread.start()
    deadline = time.monotonic() + 10
    while not inbox._events:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    inbox.close()
    thread.join(5)
    assert not thread.is_alive()
    loop.close()
