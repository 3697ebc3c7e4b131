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
