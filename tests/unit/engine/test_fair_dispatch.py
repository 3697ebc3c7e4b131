"""Fair shares of the engine's own work (contract §9.16, issue 18): links that fall due
together start round-robin over namespaces, and the API-server calls of due refreshes go
before status writes and events, each line round-robin over namespaces. On a fake clock
and the fakes; the real pool line (ThreadedKube) with a blocking fake of the API client."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import threading
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from externalauth.engine import scheduling
from externalauth.engine.adapters import ThreadedKube
from externalauth.engine.reconciler import Engine
from externalauth.engine.scheduling import Scheduler, round_robin
from externalauth.engine.settings import Settings
from externalauth.model.bodies import RawBody
from externalauth.model.names import REFRESH_ANNOTATION
from tests.unit.engine.fakes import FakeClock, FakeKube, FakeProvider, factory
from tests.unit.engine.rig import run, until


def _tenant(key: Hashable) -> str:
    return str(key)[0]


@pytest.mark.parametrize(("keys", "ordered"), [
    pytest.param("A1 A2 A3 B1 C1", "A1 B1 C1 A2 A3", id="a namespace listed first gets one turn in each round"),
    pytest.param("B1 A1 A2 A3 B2", "B1 A1 B2 A2 A3", id="namespaces take turns in the order they first appear"),
    pytest.param("A1 A2 A3", "A1 A2 A3", id="one namespace keeps its own order"),
    pytest.param("A3 B2 A1 B1", "A3 B2 A1 B1", id="each namespace's keys stay in the order given, not sorted"),
    pytest.param("", "", id="nothing due starts nothing"),
])
def test_keys_due_together_are_ordered_round_robin_over_namespaces(keys: str, ordered: str) -> None:
    assert ordered.split() == round_robin(keys.split(), _tenant)  # type: ignore[arg-type]


@run
async def test_keys_due_at_once_start_round_robin_over_their_namespaces() -> None:
    """Start-up: namespace A's 6 links were listed before B's 2 and C's 1; with one
    reconcile slot they are decided A, B, C, A, B, A, ...: B and C wait for one of A's
    links each, not for all six."""
    clock, started = FakeClock(), []

    async def work(key: Hashable) -> None:
        started.append(key)

    sched = Scheduler(work, concurrency=1, clock=clock, tenant=_tenant)
    for key in [f"A{i}" for i in range(6)] + ["B0", "B1", "C0"]:
        sched.schedule(key)
    sched.start()
    assert 9 == sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    assert ["A0", "B0", "C0", "A1", "B1", "A2", "A3", "A4", "A5"] == started


@run
async def test_without_tenants_keys_due_at_once_start_in_time_order() -> None:
    clock, started = FakeClock(), []

    async def work(key: Hashable) -> None:
        started.append(key)

    sched = Scheduler(work, concurrency=1, clock=clock)
    for key, at in (("A1", 2), ("B1", 1), ("A0", 0)):
        sched.schedule(key, clock.now() - dt.timedelta(seconds=at))
    sched.start()
    sched.dispatch_due()
    await until(lambda: sched.busy == 0)
    assert ["A1", "B1", "A0"] == started, "oldest first, whatever the namespace"


@run
async def test_a_large_batch_of_due_keys_starts_a_turn_of_the_loop_at_a_time() -> None:
    """150 keys due at once start START_PER_TURN at a time, one call of dispatch_due each,
    still round-robin over namespaces across the turns."""
    clock, started = FakeClock(), []
    gate = asyncio.Event()

    async def work(key: Hashable) -> None:
        started.append(key)
        await gate.wait()

    sched = Scheduler(work, concurrency=1000, clock=clock, tenant=_tenant)
    for key in [f"A{i}" for i in range(100)] + [f"B{i}" for i in range(50)]:
        sched.schedule(key)
    sched.start()
    assert 150 == sched.dispatch_due()
    assert (64, 86) == (sched.busy, sched.waiting_to_start)
    assert 0 == sched.dispatch_due(), "the keys that wait are not due again"
    assert (128, 22) == (sched.busy, sched.waiting_to_start)
    sched.dispatch_due()
    assert (150, 0) == (sched.busy, sched.waiting_to_start)
    await until(lambda: len(started) == 150)
    assert [f"A{i}" for i in range(50)] == [k for k in started if k.startswith("A")][:50]
    assert [f"B{i}" for i in range(50)] == [k for k in started if k.startswith("B")]
    assert started[:4] == ["A0", "B0", "A1", "B1"] and started[100:] == [f"A{i}" for i in range(50, 100)]
    gate.set()
    await until(lambda: sched.busy == 0)


@run
async def test_an_answer_that_arrives_while_a_batch_starts_is_handled_before_the_rest_of_it() -> None:
    """The run loop yields between turns: the answer to the first reconcile's call (a
    callback queued as it starts) runs after START_PER_TURN reconciles have started, not
    after all 150 have decided."""
    clock, started = FakeClock(), []
    loop = asyncio.get_running_loop()

    async def work(key: Hashable) -> None:
        if key == "A0":
            loop.call_soon(started.append, "answer")
        started.append(key)

    sched = Scheduler(work, concurrency=1000, clock=clock, tenant=_tenant)
    for i in range(150):
        sched.schedule(f"A{i}")
    sched.start()
    running = asyncio.create_task(sched.run())
    await until(lambda: len(started) == 151, tasks=[running])
    assert 64 == started.index("answer")
    await sched.stop(grace=1)
    await running


@run
async def test_work_that_is_not_due_waits_while_the_pipeline_in_front_has_due_work() -> None:
    """A provider's K slots behind its pipeline: a call that is not due gets a free slot
    only while no due refresh is in the pipeline (claiming, waiting or calling), and gets
    it as soon as the pipeline is idle again, whether by a release or a cancelled wait."""
    from externalauth.engine.scheduling import FairSlots
    pipeline = FairSlots(1)
    calls = FairSlots(2, behind=pipeline)
    await calls.acquire("A", due=False)  # the pipeline is idle: at once
    calls.release()
    await pipeline.acquire("B")  # a due refresh claims
    assert calls.free and not calls.free_for(due=False)
    later = asyncio.create_task(calls.acquire("A", due=False))
    await asyncio.sleep(0)
    assert not later.done() and 1 == calls.waiting
    await asyncio.wait_for(calls.acquire("B"), 1)  # the due call goes at once
    pipeline.release()  # the pipeline is idle: A's call gets the other slot
    await asyncio.wait_for(later, 1)
    assert not calls.free_for(due=True)
    calls.release()
    calls.release()
    await pipeline.acquire("B")
    queued = asyncio.create_task(pipeline.acquire("C"))  # another due refresh waits for the pipeline
    not_due = asyncio.create_task(calls.acquire("A", due=False))
    await asyncio.sleep(0)
    pipeline.release()  # handed to C: the pipeline is still busy
    await asyncio.wait_for(queued, 1)
    await asyncio.sleep(0)
    assert not not_due.done()
    waiting = asyncio.create_task(pipeline.acquire("D"))
    await asyncio.sleep(0)
    pipeline.release()  # handed to D
    await asyncio.wait_for(waiting, 1)
    pipeline.release()
    await asyncio.wait_for(not_due, 1)
    assert pipeline.idle and not calls.idle


@run
async def test_a_cancelled_holder_that_leaves_the_pipeline_idle_lets_work_that_is_not_due_go() -> None:
    from externalauth.engine.scheduling import FairSlots
    pipeline = FairSlots(1)
    calls = FairSlots(1, behind=pipeline)
    gate = asyncio.create_task(pipeline.acquire("B"))
    await gate
    queued = asyncio.create_task(pipeline.acquire("C"))
    not_due = asyncio.create_task(calls.acquire("A", due=False))
    await asyncio.sleep(0)
    pipeline.release()  # handed to C
    await asyncio.wait_for(queued, 1)
    late = asyncio.create_task(pipeline.acquire("D"))
    await asyncio.sleep(0)
    pipeline.release()  # handed to D, which is cancelled before it runs: passed on, then idle
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    await asyncio.wait_for(not_due, 1)
    assert pipeline.idle


# --- the engine: which calls are due work ---------------------------------------------

class MarkingKube(FakeKube):
    """Journals, with each API call, whether it was made as due work."""

    def _mark(self, what: str) -> None:
        self.journal.append(f"{'due' if scheduling.is_due() else 'later'} {what}")

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any],
                           *, resource_version: str | None, urgent: bool = False) -> RawBody:
        self._mark(f"secret {namespace}/{name}")
        return await super().patch_secret(namespace, name, patch, resource_version=resource_version, urgent=urgent)

    async def patch_link_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                *, resource_version: str | None = None) -> RawBody:
        self._mark(f"status {namespace}/{name}")
        return await super().patch_link_status(namespace, name, status, resource_version=resource_version)

    async def post_event(self, obj: RawBody, *, type_: str, reason: str, message: str,
                         now: dt.datetime) -> None:
        self._mark(f"event {(obj.get('metadata') or {}).get('namespace')}/{reason}")
        await super().post_event(obj, type_=type_, reason=reason, message=message, now=now)


class World:
    def __init__(self, *, burst: int = 50, max_concurrent: int = 10) -> None:
        self.max_concurrent = max_concurrent
        self.journal: list[str] = []
        self.clock = FakeClock()
        self.kube = MarkingKube(self.journal)
        self.provider = FakeProvider(self.journal, self.clock)
        self.engine = Engine(self.kube, make_client=factory(lambda spec, secret: self.provider),
                             settings=Settings(tenant_burst=burst), clock=self.clock, holder="me")

    async def start(self) -> None:
        body = {"metadata": {"name": "gh", "generation": 1, "resourceVersion": "1"},
                "spec": {"clientID": "id", "maxConcurrentRefreshes": self.max_concurrent, "type": "generic",
                         "tokenURL": "https://provider.test/token"}}
        self.kube.providers["gh"] = body
        await self.engine.on_provider("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]

    def link(self, namespace: str, name: str, *, expires_in: float | None,
             annotations: dict[str, str] | None = None) -> None:
        """A link and its Secret, as the first listing delivers them (links first)."""
        body: dict[str, Any] = {
            "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
            "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": 1,
                         "annotations": dict(annotations or {})},
            "spec": {"providerName": "gh", "secretName": name, "validate": False}}
        self.kube.bump(body)
        self.kube.links[(namespace, name)] = body
        self.engine.on_link("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]
        expiry = self.clock.now() + dt.timedelta(seconds=expires_in) if expires_in is not None else None
        self.engine.on_secret("ADDED", self.kube.put_secret(namespace, name, access=f"a-{name}",
                                                            refresh=f"r-{name}", expiry=expiry))

    async def run_due(self) -> None:
        self.engine.scheduler.start()
        self.engine.scheduler.dispatch_due()
        await until(lambda: self.engine.scheduler.busy == 0, rounds=10_000)
        await self.engine.recorder.drain(grace=5)

    def calls(self, namespace: str) -> list[str]:
        return [e for e in self.journal if e.split()[0] in ("due", "later") and f" {namespace}/" in e]


@run
async def test_a_due_refresh_makes_its_secret_calls_as_due_work_and_its_status_and_events_after() -> None:
    """The claim and the persist of a token that is due are due work (they go first in the
    API-server calls' line); the link's status write and its event are not."""
    world = World()
    await world.start()
    world.link("b", "l0", expires_in=30)
    await world.run_due()
    assert ["r-l0"] == world.provider.exchanged
    assert ["due secret b/l0", "due secret b/l0", "later status b/l0", "later event b/Refreshed"] == world.calls("b")


@pytest.mark.parametrize(("expires_in", "annotations"), [
    pytest.param(None, None, id="a Secret without an expiry (first sight)"),
    pytest.param(8 * 3600.0, {REFRESH_ANNOTATION: "now"}, id="a refresh request"),
])
def test_a_refresh_that_is_not_due_holds_no_pipeline_slot_while_it_waits_for_the_provider(
        expires_in: float | None, annotations: dict[str, str] | None) -> None:
    """K = 1 (a pipeline of 2), the provider's slot busy: A's two calls that are not due
    wait for it without claiming, so B's due refresh still gets a pipeline slot and claims
    meanwhile; once the slot is free B's call goes first, then A's, each claimed only then."""
    @run
    async def body() -> None:
        world = World(max_concurrent=1)
        await world.start()
        world.link("a", "junk0", expires_in=expires_in, annotations=annotations)
        world.link("a", "junk1", expires_in=expires_in, annotations=annotations)
        world.link("b", "l0", expires_in=30)
        runtime = world.engine.providers.get("gh")
        assert runtime is not None and runtime.semaphore is not None
        await runtime.semaphore.acquire("busy")
        tasks = [asyncio.create_task(world.engine.reconcile_link(("a", f"junk{i}"))) for i in (0, 1)]
        await until(lambda: runtime.semaphore.waiting == 2, tasks=tasks)  # type: ignore[union-attr]
        tasks.append(asyncio.create_task(world.engine.reconcile_link(("b", "l0"))))
        await until(lambda: "due secret b/l0" in world.journal, tasks=tasks)
        await until(lambda: runtime.semaphore.waiting == 3, tasks=tasks)  # type: ignore[union-attr]
        assert [] == [e for e in world.journal if " secret a/" in e], "A claimed while it waited"
        runtime.semaphore.release()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        assert ["r-l0", "r-junk0", "r-junk1"] == world.provider.exchanged
        assert ["due secret a/junk0", "due secret a/junk1"] == [
            e for e in world.journal if " secret a/" in e][:2], "claimed holding the slot: at once"
    body()


@run
async def test_at_start_up_a_namespace_listed_later_is_not_decided_after_all_of_another() -> None:
    """Namespace A's 20 links without an expiry (a budget of 2 calls: the other 18 only get a
    status) were listed before B's 2 due links: B's links are claimed before A's statuses are
    written, not after all twenty."""
    world = World(burst=2)
    await world.start()
    for i in range(20):
        world.link("a", f"junk{i}", expires_in=None)
    for i in range(2):
        world.link("b", f"l{i}", expires_in=30)
    await world.run_due()
    assert sorted(["r-l0", "r-l1", "r-junk0", "r-junk1"]) == sorted(world.provider.exchanged)
    steps = [e for e in world.journal if e.split()[0] in ("due", "later")]
    a_statuses = [i for i, e in enumerate(steps) if e.startswith("later status a/")]
    b_claims = [i for i, e in enumerate(steps) if e.startswith("due secret b/")]
    assert 20 == len(a_statuses) and 4 == len(b_claims)
    assert max(b_claims[:2]) < a_statuses[2], steps


# --- the API-server calls' line (ThreadedKube) ------------------------------------------

class BlockingKube:
    """Every call is journalled as it reaches the API server; the calls hang until
    ``release`` is set (an API server slow to answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reached: list[str] = []

    def _reach(self, what: str) -> None:
        self.reached.append(what)
        self.release.wait(30)

    def patch_link_status(self, namespace: str, name: str, status: dict[str, Any], *,
                          resource_version: str | None = None) -> dict[str, Any]:
        self._reach(f"status {namespace}/{name}")
        return {"metadata": {"namespace": namespace, "name": name}}

    def post_event(self, obj: dict[str, Any], **_: Any) -> None:
        self._reach(f"event {obj['metadata']['namespace']}")

    def patch_secret(self, namespace: str, name: str, patch: dict[str, Any], *,
                     resource_version: str | None) -> dict[str, Any]:
        self._reach(f"secret {namespace}/{name}")
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "2"}}

    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        self._reach(f"get {namespace}/{name}")
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "2"}}


@run
async def test_the_api_line_serves_due_work_first_then_namespaces_in_turn() -> None:
    """One API thread, busy with A's status write; A queues 3 more, then B an event and a
    status write, then B's due refresh its claim and re-read: the API server sees B's claim
    and re-read next, then A and B in turn, not A's backlog first."""
    kube = BlockingKube()
    pool = ThreadPoolExecutor(1)
    threaded = ThreadedKube(kube, pool, slots=1)  # type: ignore[arg-type]
    try:
        calls = [asyncio.ensure_future(threaded.patch_link_status("a", "l0", {}))]
        await until(lambda: len(kube.reached) == 1)
        calls += [asyncio.ensure_future(threaded.patch_link_status("a", f"l{i}", {})) for i in (1, 2, 3)]
        calls.append(asyncio.ensure_future(threaded.post_event({"metadata": {"namespace": "b"}}, type_="Normal",
                                                               reason="R", message="m", now=None)))  # type: ignore[arg-type]
        calls.append(asyncio.ensure_future(threaded.patch_link_status("b", "l0", {})))
        with scheduling.due_work():
            calls.append(asyncio.ensure_future(threaded.patch_secret("b", "tok", {}, resource_version="1")))
            calls.append(asyncio.ensure_future(threaded.get_secret("b", "tok")))
        await asyncio.sleep(0)
        kube.release.set()
        await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
        assert ["status a/l0", "secret b/tok", "get b/tok", "status a/l1", "event b", "status a/l2",
                "status b/l0", "status a/l3"] == kube.reached
    finally:
        kube.release.set()
        pool.shutdown(wait=True)


@run
async def test_without_a_line_the_pool_serves_calls_in_the_order_they_came() -> None:
    kube = BlockingKube()
    pool = ThreadPoolExecutor(1)
    threaded = ThreadedKube(kube, pool)  # type: ignore[arg-type]
    try:
        calls = [asyncio.ensure_future(threaded.patch_link_status("a", f"l{i}", {})) for i in range(2)]
        await until(lambda: len(kube.reached) == 1)
        with scheduling.due_work():
            calls.append(asyncio.ensure_future(threaded.patch_secret("b", "tok", {}, resource_version="1")))
        await asyncio.sleep(0)
        kube.release.set()
        await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
        assert ["status a/l0", "status a/l1", "secret b/tok"] == kube.reached
    finally:
        kube.release.set()
        pool.shutdown(wait=True)
