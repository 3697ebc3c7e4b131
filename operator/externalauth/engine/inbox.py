"""Events from the watch threads to the event loop, in batches: a thread appends and wakes
the loop only if no wake-up is pending, so a burst of events costs one wake-up. A full
inbox makes the watch threads wait (the API server holds the rest of the stream)."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable

from externalauth.model.bodies import RawBody
from externalauth.policy import timing

log = logging.getLogger("externalauth")

#: Events waiting for the loop before a watch thread waits for room (bounds the memory of
#: a first listing that outpaces the loop: 100,000 links and Secrets decoded at once).
INBOX_LIMIT = 2000

Handler = Callable[[str, RawBody], None]


class Inbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, limit: int = INBOX_LIMIT) -> None:
        self._loop = loop
        self._limit = limit
        self._events: collections.deque[tuple[Handler, str, RawBody]] = collections.deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._woken = False
        self._closed = False
        self._waiting = 0  # watch threads waiting for room

    def __len__(self) -> int:
        """Events waiting for the loop."""
        with self._lock:
            return len(self._events)

    def sender(self, handler: Handler) -> Handler:
        def send(kind: str, obj: RawBody) -> None:
            with self._room:
                while len(self._events) >= self._limit and not self._closed:
                    self._waiting += 1
                    self._room.notify_all()  # for wait_for_waiting
                    self._room.wait(timeout=timing.INBOX_WAIT)
                    self._waiting -= 1
                if self._closed:
                    return
                self._events.append((handler, kind, obj))
                if self._woken:
                    return
                self._woken = True
            self._loop.call_soon_threadsafe(self._drain)
        return send

    def wait_for_waiting(self, threads: int, *, timeout: float) -> bool:
        """Block until ``threads`` watch threads wait for room (False: ``timeout`` passed)."""
        with self._room:
            return self._room.wait_for(lambda: self._waiting >= threads, timeout)

    def close(self) -> None:
        """No more events: waiting watch threads return."""
        with self._room:
            self._closed = True
            self._room.notify_all()

    def _drain(self) -> None:
        with self._room:
            events, self._events = self._events, collections.deque()
            self._woken = False
            self._room.notify_all()
        for handler, kind, obj in events:
            try:
                handler(kind, obj)
            except Exception:
                log.exception("an event of %s could not be handled", kind)
