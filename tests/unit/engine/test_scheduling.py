"""The scheduler (one heap for every link) on a fake clock, and single flight per link."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Hashable

from externalauth.engine.scheduling import Scheduler
from tests.unit.engine.fakes import FakeClock
from tests.unit.engine.rig import LINK, Rig, run, until


class Recorder:
    def __init__(self) -> None:
        self.done: list[Hashable] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def work(self, key: Hashable) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.done.append(key)


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


@run
async def test_keys_are_decided_in_time_order_as_the_clock_reaches_them() -> None:
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    for key, at in (("c", 30), ("a", 10), ("b", 20)):
        sched.schedule(key, clock.now() + seconds(at))
    sched.start()
    assert 0 == sched.dispatch_due()
    for step in (10, 10, 10):
        clock.advance(step)
        sched.dispatch_due()
        await until(lambda: sched.busy == 0)
    assert ["a", "b", "c"] == rec.done


@run
async def test_an_earlier_time_replaces_a_later_one_but_not_the_reverse_unless_reset() -> None:
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    sched.schedule("k", clock.now() + seconds(60))
    sched.schedule("k", clock.now() + seconds(10))
    sched.schedule("k", clock.now() + seconds(30))
    assert clock.now() + seconds(10) == sched.when("k")
    sched.reset("k", clock.now() + seconds(30))
    assert clock.now() + seconds(30) == sched.when("k")
    sched.reset("k", None)
    assert sched.when("k") is None and 0 == len(sched)


@run
async def test_a_paused_scheduler_dispatches_nothing_until_started() -> None:
    """At start-up links wait for the Secrets' first listing."""
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    sched.schedule("k")
    assert 0 == sched.dispatch_due()
    sched.start()
    assert 1 == sched.dispatch_due()


@run
async def test_triggers_during_a_reconcile_coalesce_into_one_rerun() -> None:
    """Single flight per key: 50 triggers while it runs → exactly one more run."""
    clock, rec = FakeClock(), Recorder()
    rec.gate = asyncio.Event()
    sched = Scheduler(rec.work, clock=clock)
    sched.start()
    sched.schedule("k")
    sched.dispatch_due()
    await rec.started.wait()
    for _ in range(50):
        sched.schedule("k")
        sched.dispatch_due()
    rec.gate.set()
    await until(lambda: sched.busy == 0)
    assert ["k", "k"] == rec.done


@run
async def test_the_run_loop_sleeps_until_the_next_key_is_due() -> None:
    """No busy loop: nothing runs before its time, and it runs when the clock gets there."""
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    sched.schedule("k", clock.now() + seconds(120))
    sched.start()
    loop = asyncio.create_task(sched.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert [] == rec.done
    clock.advance(120)
    await until(lambda: rec.done == ["k"])
    await sched.stop(grace=1)
    await loop


@run
async def test_fifty_triggers_of_a_due_link_cause_one_exchange() -> None:
    """The engine's single flight: annotation events and watch events arriving while a
    refresh is in flight are answered by it."""
    rig = Rig()
    await rig.standard()
    rig.provider.gate = gate = asyncio.Event()
    rig.engine.scheduler.start()
    loop = asyncio.create_task(rig.engine.scheduler.run())
    await until(lambda: rig.provider.exchanged)
    for _ in range(50):
        rig.engine.scheduler.schedule(LINK)
    gate.set()
    await until(lambda: rig.engine.scheduler.busy == 0 and rig.steps("persist"))
    await until(lambda: rig.engine.scheduler.busy == 0)
    await rig.engine.drain()
    await loop
    assert ["refresh-0"] == rig.provider.exchanged


# --- fair shares of a provider (contract §9.16) ---------------------------------------------

@run
async def test_a_provider_slot_goes_round_robin_to_the_namespaces_that_wait() -> None:
    """Namespace A queues 6 calls before B queues 2 and C 1; with one slot, the order of
    service is A, B, C, A, B, A, ...: B and C wait for one of A's calls each, not all six."""
    from externalauth.engine.scheduling import FairSlots
    slots, served = FairSlots(1), []
    await slots.acquire("holder")

    async def call(tenant: str, i: int) -> None:
        async with slots.slot(tenant):
            served.append(f"{tenant}{i}")

    tasks = [asyncio.create_task(call("A", i)) for i in range(6)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(call("B", i)) for i in range(2)]
    tasks.append(asyncio.create_task(call("C", 0)))
    await asyncio.sleep(0)
    assert 9 == slots.waiting
    slots.release()
    await asyncio.gather(*tasks)
    assert ["A0", "B0", "C0", "A1", "B1", "A2", "A3", "A4", "A5"] == served
    assert slots.free and 0 == slots.waiting


@run
async def test_a_cancelled_waiter_gives_up_its_turn_and_a_cancelled_holder_passes_its_slot_on() -> None:
    from externalauth.engine.scheduling import FairSlots
    slots = FairSlots(1)
    await slots.acquire("A")
    waiting = asyncio.create_task(slots.acquire("B"))
    after = asyncio.create_task(slots.acquire("C"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(after, 1)
    assert not slots.free
    slots.release()
    assert slots.free


@run
async def test_a_reconcile_that_waits_for_a_provider_gives_its_slot_to_another_link() -> None:
    """A flood of links waiting for one slow provider cannot hold every reconcile slot: with
    2 reconcile slots, 5 links of the flood wait for the provider while another provider's
    link is reconciled at once."""
    from externalauth.engine.scheduling import FairSlots, give_up_slot
    clock = FakeClock()
    provider, done = FairSlots(1), []
    await provider.acquire("held")  # the slow provider is busy

    async def work(key: Hashable) -> None:
        if str(key).startswith("flood"):
            if not provider.free:
                give_up_slot()
            async with provider.slot("A"):
                done.append(key)
        else:
            done.append(key)

    sched = Scheduler(work, concurrency=2, clock=clock)
    for i in range(5):
        sched.schedule(f"flood{i}")
    sched.start()
    sched.dispatch_due()
    await until(lambda: provider.waiting == 5)
    sched.schedule("other")
    sched.dispatch_due()
    await until(lambda: "other" in done)
    assert ["other"] == done
    provider.release()
    await until(lambda: len(done) == 6)
    await until(lambda: sched.busy == 0)
    assert sched._slots._value == 2, "every slot given back exactly once"


@run
async def test_due_work_goes_before_work_that_is_not_due() -> None:
    """Namespace A's calls that are not due (first sight, requests) queued first still wait
    behind B's due refreshes, which then run as if A were not there."""
    from externalauth.engine.scheduling import FairSlots
    slots, served = FairSlots(1), []
    await slots.acquire("holder")

    async def call(tenant: str, i: int, due: bool) -> None:
        async with slots.slot(tenant, due=due):
            served.append(f"{tenant}{i}")

    tasks = [asyncio.create_task(call("A", i, False)) for i in range(3)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(call("B", i, True)) for i in range(2)]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert ["B0", "B1", "A0", "A1", "A2"] == served


@run
async def test_a_cancelled_waiter_does_not_cost_its_namespace_its_turn() -> None:
    """A waits with two links, B with one; A's first gives up waiting (its reconcile was
    cancelled): the slot goes to A's second, then B's, as if the first had never queued."""
    from externalauth.engine.scheduling import FairSlots
    slots, served = FairSlots(1), []
    await slots.acquire("holder")

    async def call(name: str) -> None:
        async with slots.slot(name[0]):
            served.append(name)

    gives_up = asyncio.create_task(call("A0"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(call(name)) for name in ("A1", "B0")]
    await asyncio.sleep(0)
    gives_up.cancel()
    await asyncio.sleep(0)
    assert 2 == slots.waiting
    slots.release()
    await asyncio.gather(*tasks)
    assert ["A1", "B0"] == served


@run
async def test_slots_given_back_are_all_free_again_and_no_more() -> None:
    from externalauth.engine.scheduling import FairSlots
    slots = FairSlots(2)
    for _ in range(2):
        await slots.acquire("A")
    slots.release()
    slots.release()
    for _ in range(2):
        await asyncio.wait_for(slots.acquire("A"), 1)
    third = asyncio.create_task(slots.acquire("A"))
    await asyncio.sleep(0)
    assert (1, False) == (slots.waiting, third.done())
    slots.release()
    await asyncio.wait_for(third, 1)


@run
async def test_every_key_whose_time_has_come_is_dispatched_past_superseded_entries() -> None:
    """k was moved from +10 s to +30 s: its old entry is skipped, not a stop; at +20 s both
    keys due by then run, at +30 s k."""
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    sched.schedule("k", clock.now() + seconds(10))
    sched.reset("k", clock.now() + seconds(30))
    sched.schedule("i", clock.now() + seconds(15))
    sched.schedule("j", clock.now() + seconds(20))
    sched.start()
    clock.advance(20)
    assert 2 == sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    clock.advance(10)
    assert 1 == sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    assert ["i", "j", "k"] == rec.done


@run
async def test_the_run_loop_wakes_for_a_key_scheduled_before_the_one_it_sleeps_for() -> None:
    """Sleeping until +120 s; a key scheduled for +10 s (or half a second) runs at its time."""
    for early in (10.0, 0.5):
        clock, rec = FakeClock(), Recorder()
        sched = Scheduler(rec.work, clock=clock)
        sched.schedule("late", clock.now() + seconds(120))
        sched.start()
        loop = asyncio.create_task(sched.run())
        await asyncio.sleep(0)
        sched.schedule("early", clock.now() + seconds(early))
        await until(lambda: not sched._wake.is_set(), tasks=[loop])  # the loop sleeps again, for early
        clock.advance(early)
        await until(lambda: rec.done == ["early"], tasks=[loop])
        await sched.stop(grace=1)
        await loop


@run
async def test_a_reconcile_that_crashes_is_tried_again_in_thirty_seconds() -> None:
    clock = FakeClock()
    calls: list[Hashable] = []

    async def crashes(key: Hashable) -> None:
        calls.append(key)
        raise RuntimeError("a bug")

    sched = Scheduler(crashes, clock=clock)
    sched.start()
    sched.schedule("k")
    sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    assert (["k"], clock.now() + seconds(30)) == (calls, sched.when("k"))


@run
async def test_stop_waits_for_the_reconciles_in_flight() -> None:
    clock = FakeClock()
    done: list[Hashable] = []

    async def work(key: Hashable) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        done.append(key)

    sched = Scheduler(work, clock=clock)
    sched.start()
    sched.schedule("k")
    sched.dispatch_due()
    await sched.stop(grace=5)
    assert ["k"] == done


@run
async def test_a_key_due_again_while_it_waits_to_be_started_is_started_once() -> None:
    """More keys due at once than a turn starts: the one left waiting is triggered again
    before its turn; it is still reconciled once, not twice."""
    from externalauth.engine.scheduling import START_PER_TURN
    clock, rec = FakeClock(), Recorder()
    sched = Scheduler(rec.work, clock=clock)
    keys = [f"k{i}" for i in range(START_PER_TURN + 1)]
    for key in keys:
        sched.schedule(key)
    sched.start()
    sched.dispatch_due()
    sched.schedule(keys[-1])
    sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    assert sorted(keys) == sorted(rec.done)


@run
async def test_one_slot_given_back_goes_to_one_waiter() -> None:
    from externalauth.engine.scheduling import FairSlots
    slots = FairSlots(1)
    await slots.acquire("A")
    waiters = [asyncio.create_task(slots.acquire(t)) for t in ("B", "C")]
    await asyncio.sleep(0)
    slots.release()
    assert 1 == slots.waiting
    await asyncio.wait_for(waiters[0], 1)
    slots.release()
    await asyncio.wait_for(waiters[1], 1)


@run
async def test_a_waiter_cancelled_as_the_slot_passes_it_over_ends_cancelled() -> None:
    """Cancelled, then a release in the same turn skips it: its task ends as cancelled
    (not with an error), and the slot stays free."""
    from externalauth.engine.scheduling import FairSlots
    slots = FairSlots(1)
    await slots.acquire("A")
    waiter = asyncio.create_task(slots.acquire("B"))
    await asyncio.sleep(0)
    waiter.cancel()
    slots.release()
    await asyncio.wait([waiter])
    assert waiter.cancelled() and slots.free
