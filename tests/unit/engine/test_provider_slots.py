"""A provider's slots (maxConcurrentRefreshes = K: K token calls at once, 2K links between
claim and call) are shared fairly (contract §9.16): namespaces take turns, and due work
(a token about to expire) goes before work that is not (a refresh request, the first
refresh of a Secret without an expiry). Through the real Engine, one slot, a provider
that answers only when told."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

from externalauth.engine.settings import Settings
from externalauth.model.names import LinkKey
from tests.unit.engine.rig import Rig, run, until


def add(rig: Rig, namespace: str, name: str, *, due: bool = True, expires_in: float = 60) -> LinkKey:
    """A link on a Secret holding ``rt-name``: expiring in a minute (due), or without an
    expiry (its first refresh is not due)."""
    expiry = rig.clock.now() + dt.timedelta(seconds=expires_in) if due else None
    secret = rig.kube.put_secret(namespace, name, access=f"at-{name}", refresh=f"rt-{name}", expiry=expiry)
    body: dict[str, Any] = {
        "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": 1, "annotations": {}},
        "spec": {"providerName": "gh", "secretName": name, "validate": False}}
    rig.kube.bump(body)
    rig.kube.links[(namespace, name)] = body
    rig.engine.on_link("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]
    rig.engine.on_secret("ADDED", secret)
    return (namespace, name)


async def exchange_order(rig: Rig, queued: list[LinkKey]) -> list[str]:
    """``ns/first`` holds the one call slot (its answer held back) and ``ns/second`` the
    other pipeline place; ``queued`` then wait, in this order, for the pipeline (due) or
    for the call slot (not due: it skips the pipeline). The order in which the provider
    is then called."""
    gate = asyncio.Event()
    rig.provider.gate = gate
    runtime = rig.engine.providers.get("gh")
    assert runtime is not None and runtime.pipeline is not None
    tasks = [asyncio.create_task(rig.engine.reconcile_link(add(rig, "ns", "first")))]
    await until(lambda: rig.provider.exchanged == ["rt-first"], tasks=tasks)
    tasks.append(asyncio.create_task(rig.engine.reconcile_link(add(rig, "ns", "second"))))
    await until(lambda: rig.kube.claim(("ns", "second")) is not None, tasks=tasks)
    for n, key in enumerate(queued, start=1):
        tasks.append(asyncio.create_task(rig.engine.reconcile_link(key)))
        await until(lambda n=n: runtime.pipeline.waiting + runtime.semaphore.waiting == n + 1,  # type: ignore[misc]
                    tasks=tasks)  # (+1: ns/second waits for the call slot)
    gate.set()
    await asyncio.gather(*tasks)
    return rig.provider.exchanged


@run
async def test_namespaces_waiting_for_a_provider_take_turns() -> None:
    """ns queued two links before other queued one: ns, other, ns, not ns, ns, other."""
    rig = Rig(max_concurrent=1)
    await rig.add_provider()
    queued = [add(rig, "ns", "a1"), add(rig, "ns", "a2"), add(rig, "other", "b1")]
    assert ["rt-first", "rt-second", "rt-a1", "rt-b1", "rt-a2"] == await exchange_order(rig, queued)


@run
async def test_due_refreshes_go_before_those_that_are_not_due() -> None:
    """A first refresh without an expiry queued before a due one goes after it."""
    rig = Rig(max_concurrent=1)
    await rig.add_provider()
    queued = [add(rig, "ns", "learn", due=False), add(rig, "ns", "due")]
    assert ["rt-first", "rt-second", "rt-due", "rt-learn"] == await exchange_order(rig, queued)


@run
async def test_a_link_that_must_wait_for_the_provider_lets_another_link_be_reconciled() -> None:
    """One reconcile slot (concurrency 1), the provider's pipeline full: a third link that
    has to wait for the provider gives its reconcile slot up, and a link that needs no call
    is reconciled meanwhile; a link that did not have to wait keeps its slot."""
    rig = Rig(max_concurrent=1, settings=Settings(concurrency=1))
    await rig.add_provider()
    rig.provider.gate = gate = asyncio.Event()
    runtime = rig.engine.providers.get("gh")
    assert runtime is not None and runtime.pipeline is not None
    tasks = [asyncio.create_task(rig.engine.reconcile_link(add(rig, "ns", "first")))]
    await until(lambda: rig.provider.exchanged == ["rt-first"], tasks=tasks)
    tasks.append(asyncio.create_task(rig.engine.reconcile_link(add(rig, "ns", "second"))))
    await until(lambda: rig.kube.claim(("ns", "second")) is not None, tasks=tasks)
    add(rig, "ns", "waits")  # scheduled by its watch event
    idle = add(rig, "other", "idle", expires_in=3600)
    scheduler = rig.engine.scheduler
    for key in (("ns", "first"), ("ns", "second"), idle):
        scheduler.forget(key)
    scheduler.start()
    scheduler.dispatch_due()
    await until(lambda: runtime.pipeline.waiting == 1, tasks=tasks)  # type: ignore[union-attr]
    scheduler.schedule(idle)
    scheduler.dispatch_due()
    await until(lambda: "status" in rig.kube.links[idle], tasks=tasks)
    gate.set()
    await asyncio.gather(*tasks)
    await until(lambda: scheduler.busy == 0)
    assert ["rt-first", "rt-second", "rt-waits"] == rig.provider.exchanged


@run
async def test_no_more_links_are_reconciled_at_once_than_the_concurrency_setting() -> None:
    """Concurrency 1: the second due link is not even claimed before the first one's
    refresh is done."""
    rig = Rig(settings=Settings(concurrency=1))
    await rig.add_provider()
    rig.provider.gate = gate = asyncio.Event()
    add(rig, "ns", "a")
    add(rig, "ns", "b")
    rig.engine.scheduler.start()
    rig.engine.scheduler.dispatch_due()
    await until(lambda: rig.provider.exchanged == ["rt-a"])
    gate.set()
    await until(lambda: rig.engine.scheduler.busy == 0 and len(rig.provider.exchanged) == 2)
    assert ["claim ns/a", "exchange rt-a", "persist ns/a", "claim ns/b", "exchange rt-b", "persist ns/b"] == [
        e for e in rig.steps("claim", "exchange", "persist", full=True) if e.split(" ")[1] in ("ns/a", "ns/b",
                                                                                               "rt-a", "rt-b")]


@run
async def test_namespaces_take_turns_for_the_call_slots_too() -> None:
    """Three call slots busy with ns's refreshes; ns's two next ones and then other's one
    claim and wait for a call slot: when the slots come free, other's goes second."""
    rig = Rig(max_concurrent=3)
    await rig.add_provider()
    rig.provider.gate = gate = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    for name in ("e1", "e2", "e3"):
        tasks.append(asyncio.create_task(rig.engine.reconcile_link(add(rig, "ns", name))))
    await until(lambda: len(rig.provider.exchanged) == 3, tasks=tasks)
    for namespace, name in (("ns", "w1"), ("ns", "w2"), ("other", "w3")):
        tasks.append(asyncio.create_task(rig.engine.reconcile_link(add(rig, namespace, name))))
        await until(lambda namespace=namespace, name=name: rig.kube.claim((namespace, name)) is not None,  # type: ignore[misc]
                    tasks=tasks)
    gate.set()
    await asyncio.gather(*tasks)
    assert ["rt-w1", "rt-w3", "rt-w2"] == rig.provider.exchanged[3:]
