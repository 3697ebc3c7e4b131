"""The real Kubernetes port's thread pools (engine/adapters.py), with a blocking fake of
the API client: a persist of new tokens never queues behind other API-server calls."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from externalauth.engine.adapters import ThreadedKube
from tests.unit.engine.rig import run


class BlockingKube:
    """Status writes and events hang until ``release`` is set (an API server slow to
    answer them); Secret writes and reads answer at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.secret_writes: list[tuple[str, str]] = []

    def patch_link_status(self, namespace: str, name: str, status: dict[str, Any], *,
                          resource_version: str | None = None) -> dict[str, Any]:
        self.release.wait(30)
        return {"metadata": {"namespace": namespace, "name": name}, "status": status}

    def post_event(self, obj: dict[str, Any], **_: Any) -> None:
        self.release.wait(30)

    def patch_secret(self, namespace: str, name: str, patch: dict[str, Any], *,
                     resource_version: str | None) -> dict[str, Any]:
        self.secret_writes.append((namespace, name))
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "2"}}

    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "2"}}


@run
async def test_a_persist_is_not_queued_behind_a_backlog_of_status_writes_and_events() -> None:
    """Every API thread is busy with a status write the API server is slow to answer, and
    more status writes and events wait for a thread: the persist (and its re-read) still
    lands at once, in a pool of its own."""
    kube = BlockingKube()
    pool, urgent = ThreadPoolExecutor(2), ThreadPoolExecutor(1)
    threaded = ThreadedKube(kube, pool, urgent_pool=urgent)  # type: ignore[arg-type]
    try:
        backlog = [asyncio.ensure_future(threaded.patch_link_status("ns", f"l{i}", {"x": i})) for i in range(6)]
        backlog += [asyncio.ensure_future(threaded.post_event({}, type_="Normal", reason="R", message="m",
                                                               now=None))  # type: ignore[arg-type]
                    for _ in range(3)]
        written = await asyncio.wait_for(threaded.patch_secret("ns", "tok", {"data": {}}, resource_version="1",
                                                               urgent=True), timeout=10)
        reread = await asyncio.wait_for(threaded.get_secret("ns", "tok", urgent=True), timeout=10)
        assert ("2", "2", [("ns", "tok")]) == (written["metadata"]["resourceVersion"],
                                               (reread or {})["metadata"]["resourceVersion"], kube.secret_writes)
        assert not any(task.done() for task in backlog)  # the backlog is still there
        kube.release.set()
        await asyncio.gather(*backlog)
    finally:
        kube.release.set()
        pool.shutdown(wait=True)
        urgent.shutdown(wait=True)


@run
async def test_a_blocking_call_hands_back_its_result_or_its_error() -> None:
    from externalauth.engine.adapters import run_blocking

    def fail(what: str) -> None:
        raise LookupError(what)

    pool = ThreadPoolExecutor(2)
    try:
        assert 5 == await run_blocking(pool, lambda a, b: a + b, 2, 3)
        try:
            await run_blocking(pool, fail, "missing")
        except LookupError as e:
            assert "missing" == str(e)
        else:
            raise AssertionError("the thread's error did not reach the caller")
    finally:
        pool.shutdown(wait=True)


@run
async def test_a_blocking_call_cancelled_before_a_thread_took_it_never_runs() -> None:
    """The one thread is busy; the queued call's caller gives up: the call is dropped, not
    run later (a claim nobody waits for would otherwise still be written)."""
    from externalauth.engine.adapters import run_blocking

    busy, ran = threading.Event(), []
    pool = ThreadPoolExecutor(1)
    try:
        first = asyncio.ensure_future(run_blocking(pool, busy.wait, 30))
        queued = asyncio.ensure_future(run_blocking(pool, ran.append, "queued"))
        await asyncio.sleep(0)  # both submitted
        queued.cancel()
        busy.set()
        assert True is await first
        assert queued.cancelled()
    finally:
        busy.set()
        pool.shutdown(wait=True)
    assert [] == ran
