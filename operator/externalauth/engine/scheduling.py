"""One scheduler for every link: a heap of (when, key) over the watch caches.

No timer task per object: 10,000 idle links cost one heap entry each and one
sleeping task in total. Triggers for a key that is already being reconciled are
coalesced into a single re-run (single-flight per link). Keys that fall due together
(start-up, a flood of new links) are started round-robin over their tenants
(namespaces), and work that is due goes first wherever it waits (:class:`FairSlots`,
:func:`due_work`): contract §9.16.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import datetime as dt
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator

from externalauth.engine.ports import Clock, SystemClock
from externalauth.policy import timing

log = logging.getLogger(__name__)


#: Reconciles started per turn of the event loop; the rest of a larger batch (a first
#: listing, a flood of new links) start in the next turns, so that the answers of calls
#: already sent are handled in between instead of after every decision of the batch.
START_PER_TURN = 64

#: The reconcile slot the running task holds (its semaphore, and whether it still holds it).
_SLOT: contextvars.ContextVar[tuple[asyncio.Semaphore, list[bool]] | None] = contextvars.ContextVar(
    "reconcile_slot", default=None)


#: Whether the running task does due work (a refresh its token's expiry asks for): its
#: API-server calls then go before status writes, events and calls that are not due.
_DUE: contextvars.ContextVar[bool] = contextvars.ContextVar("due_work", default=False)


@contextlib.contextmanager
def due_work(due: bool = True) -> Iterator[None]:
    """Mark what the running task does inside as due (or not) work, for :func:`is_due`."""
    token = _DUE.set(due)
    try:
        yield
    finally:
        _DUE.reset(token)


def is_due() -> bool:
    """Is the running task inside :func:`due_work`?"""
    return _DUE.get()


def round_robin(keys: list[Hashable], tenant: Callable[[Hashable], str]) -> list[Hashable]:
    """``keys`` reordered one tenant at a time, in the order each tenant first appears,
    each tenant's keys in their own order: A1 A2 A3 B1 C1 → A1 B1 C1 A2 A3."""
    queues: dict[str, collections.deque[Hashable]] = {}
    for key in keys:
        queues.setdefault(tenant(key), collections.deque()).append(key)
    ordered: list[Hashable] = []
    while queues:
        for name in list(queues):
            queue = queues[name]
            ordered.append(queue.popleft())
            if not queue:
                del queues[name]
    return ordered


def give_up_slot() -> None:
    """The running reconcile is about to wait for something other than work (a provider's
    slot): its reconcile slot goes to another link, and is not taken back (contract §9.16:
    a namespace's flood cannot hold the engine's slots while it waits for a provider; past
    the wait it is bounded by the provider's own slots)."""
    held = _SLOT.get()
    if held is not None and held[1][0]:
        held[1][0] = False
        held[0].release()


#: One kind of work's waiters at a FairSlots: each tenant's, in round-robin order of tenants.
_Lane = collections.OrderedDict[str, collections.deque[asyncio.Future[None]]]


class FairSlots:
    """``size`` slots shared fairly across tenants (namespaces) with work waiting (contract
    §9.16): a free slot goes to the tenant whose turn it is, round-robin over the tenants
    that wait, each tenant's waiters in order. A tenant with 1,000 waiting links gets one
    slot in turn with a tenant that has one, never 1,000 before it. Work that is due (a
    token about to expire) goes before work that is not (first sight of a Secret without an
    expiry, refresh requests: ``due=False``), which waits for the slots due work leaves.

    ``behind``: work that is not due gets a slot only while ``behind`` is idle (a
    provider's K call slots are behind its 2K pipeline, which only due refreshes enter: a
    call that is not due waits until no due refresh is claiming, waiting or calling)."""

    def __init__(self, size: int, *, behind: FairSlots | None = None) -> None:
        self.size = size
        self._free = size
        # [due, not due]: each tenant's waiters, in round-robin order of tenants
        self._waiting: tuple[_Lane, _Lane] = (collections.OrderedDict(), collections.OrderedDict())
        self._behind = behind
        self._followers: list[FairSlots] = []  # those behind this one, told when it is idle
        if behind is not None:
            behind._followers.append(self)

    @property
    def free(self) -> bool:
        """Would :meth:`acquire` of due work return at once?"""
        return self._free > 0 and not self._waiting[0]

    @property
    def idle(self) -> bool:
        """No slot held, nobody waiting."""
        return self._free == self.size and not any(self._waiting)

    def free_for(self, *, due: bool) -> bool:
        """Would :meth:`acquire` return at once?"""
        if due:
            return self.free
        return self._free > 0 and not any(self._waiting) and self._serves_not_due()

    @property
    def waiting(self) -> int:
        return sum(len(q) for lane in self._waiting for q in lane.values())

    def _serves_not_due(self) -> bool:
        return self._behind is None or self._behind.idle

    async def acquire(self, tenant: str, *, due: bool = True) -> None:
        if self.free_for(due=due):
            self._free -= 1
            return
        lane = self._waiting[0 if due else 1]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.setdefault(tenant, collections.deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            else:
                queue = lane.get(tenant)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del lane[tenant]
            raise

    def release(self) -> None:
        self._free += 1
        self.poke()
        self._tell_followers()

    def poke(self) -> None:
        """Hand the free slots to the waiters whose turn it is (due work first; work that
        is not due only while ``behind`` is idle)."""
        while self._free > 0:
            future = self._next(self._waiting[0])
            if future is None and self._serves_not_due():
                future = self._next(self._waiting[1])
            if future is None:
                return
            self._free -= 1
            future.set_result(None)

    @staticmethod
    def _next(lane: _Lane) -> asyncio.Future[None] | None:
        """The next waiter of ``lane`` still waiting, the tenants in turn."""
        while lane:
            tenant, queue = next(iter(lane.items()))
            future = queue.popleft()
            if queue:
                lane.move_to_end(tenant)  # the next tenant's turn
            else:
                del lane[tenant]
            if not future.done():
                return future
        return None

    def _tell_followers(self) -> None:
        if self._followers and self.idle:
            for follower in self._followers:
                follower.poke()

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str, *, due: bool = True) -> AsyncIterator[None]:
        await self.acquire(tenant, due=due)
        try:
            yield
        finally:
            self.release()


def _one_tenant(key: Hashable) -> str:
    return ""


class Scheduler:
    def __init__(self, work: Callable[[Hashable], Awaitable[None]], *, concurrency: int = 256,
                 clock: Clock | None = None, tenant: Callable[[Hashable], str] = _one_tenant) -> None:
        """``tenant``: whose key it is (for links: the namespace); keys due at once are
        started round-robin over tenants."""
        self._work = work
        self._tenant = tenant
        self._clock = clock or SystemClock()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._when: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._rerun: set[Hashable] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._ready: collections.deque[Hashable] = collections.deque()  # due, in order, not started yet
        self._readied: set[Hashable] = set()
        self._stopped = False
        self._paused = True

    def __len__(self) -> int:
        return len(self._when)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def schedule(self, key: Hashable, at: dt.datetime | None = None) -> None:
        """Decide about ``key`` at ``at`` (default now). An earlier time replaces a later
        one; a later one replaces an earlier one only via :meth:`reset`."""
        when = self._now() if at is None else at.timestamp()
        current = self._when.get(key)
        if current is not None and current <= when:
            return
        self._push(key, when)

    def reset(self, key: Hashable, at: dt.datetime | None) -> None:
        """Set the next decision time for ``key`` exactly (None: only on the next event)."""
        if at is None:
            self._when.pop(key, None)
            return
        self._push(key, at.timestamp())

    def when(self, key: Hashable) -> dt.datetime | None:
        """When ``key`` is next decided (None: only on its next event)."""
        at = self._when.get(key)
        return dt.datetime.fromtimestamp(at, dt.UTC) if at is not None else None

    def forget(self, key: Hashable) -> None:
        self._when.pop(key, None)

    def _push(self, key: Hashable, when: float) -> None:
        self._when[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if self._heap[0][2] == key:
            self._wake.set()

    def start(self) -> None:
        self._paused = False
        self._wake.set()

    async def run(self) -> None:
        while not self._stopped:
            self.dispatch_due()
            if self._ready:  # more to start, once the loop has handled what came meanwhile
                await asyncio.sleep(0)
                continue
            timeout = None
            if not self._paused and self._heap:
                timeout = max(0.0, self._heap[0][0] - self._now())
            self._wake.clear()
            await self._clock.wait(self._wake, timeout)

    def dispatch_due(self) -> int:
        """Start a reconcile for every key whose time has come, round-robin over their
        tenants (1,000 links of one namespace listed before another's 100 do not all start,
        decide and write first: contract §9.16), at most :data:`START_PER_TURN` now and
        the rest on the next calls (:meth:`run` makes them a turn of the loop apart); how
        many fell due."""
        now, due = self._now(), []
        while not self._paused and self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._when.get(key) != when:
                continue  # superseded entry
            del self._when[key]
            due.append(key)
        for key in round_robin(due, self._tenant) if len(due) > 1 else due:
            if key not in self._readied:
                self._readied.add(key)
                self._ready.append(key)
        for _ in range(min(START_PER_TURN, len(self._ready))):
            key = self._ready.popleft()
            self._readied.discard(key)
            self._dispatch(key)
        return len(due)

    @property
    def waiting_to_start(self) -> int:
        """Keys that fell due and wait for their turn to start."""
        return len(self._ready)

    def _dispatch(self, key: Hashable) -> None:
        if key in self._running:
            self._rerun.add(key)
            return
        self._running[key] = asyncio.create_task(self._one(key), name=f"reconcile {key}")

    async def _one(self, key: Hashable) -> None:
        try:
            while True:
                self._rerun.discard(key)
                await self._slots.acquire()
                held = [True]
                token = _SLOT.set((self._slots, held))
                try:
                    await self._work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reconcile of %s failed unexpectedly; retrying in 30s", key)
                    self.schedule(key, self._clock.now() + timing.CRASH_RETRY)
                finally:
                    _SLOT.reset(token)
                    if held[0]:
                        self._slots.release()
                if key not in self._rerun or self._stopped:
                    break
        finally:
            self._running.pop(key, None)

    async def stop(self, *, grace: float) -> None:
        """Stop dispatching and wait (up to ``grace`` seconds) for running reconciles."""
        self._stopped = True
        self._wake.set()
        tasks = list(self._running.values())
        if tasks:
            log.info("waiting for %d in-flight reconcile(s) to finish", len(tasks))
            await asyncio.wait(tasks, timeout=grace)

    @property
    def busy(self) -> int:
        return len(self._running)
