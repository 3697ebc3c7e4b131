"""Two replicas serving the same links write a link's status once per refresh, not back and
forth (contract §10): the one waiting on the other's claim leaves nextRefreshTime alone, the one
that sees the new token before the refresher's status waits for that status, and a status
decided from a stale copy of the link is not written over the newer one (the write is a
compare-and-swap on the link's resourceVersion; the newer link's watch event decides again)."""

from __future__ import annotations

import asyncio
import copy

from externalauth.engine.reconciler import Engine
from tests.unit.engine.rig import LINK, SECRET, Rig, run, until


def _statuses(rig: Rig) -> list[str]:
    return rig.steps("status", full=True)

async def _decide(engine: Engine) -> None:
    engine.scheduler.forget(LINK)
    await engine.reconcile_link(LINK)

@run
async def test_the_replica_that_lost_the_claim_does_not_rewrite_the_status_of_the_one_that_refreshed() -> None:
    rig = Rig(validate=True)
    await rig.standard(expires_in=15 * 60 + 30)  # due in 30 s
    await rig.reconcile()  # A validates the token and writes the status
    b = rig.replica("b")
    await rig.show(b)
    await _decide(b)  # B trusts A's verdict on this very token
    assert (["access-0"], ["status ns/l"]) == (rig.provider.validated, _statuses(rig))

    rig.clock.advance(31)  # due for both
    rig.provider.gate = asyncio.Event()  # A's exchange is in flight ...
    a = asyncio.create_task(rig.reconcile())
    await until(lambda: rig.provider.exchanged, tasks=[a])
    await rig.show(b)  # ... B sees A's young claim on the Secret
    await _decide(b)
    assert ["status ns/l"] == _statuses(rig), "B wrote a status while A refreshed"

    rig.provider.gate.set()
    await a  # A stores, validates and publishes the new token
    assert ["access-0", "access-1"] == rig.provider.validated
    published = copy.deepcopy(rig.kube.links[LINK]["status"])
    b.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    await _decide(b)  # B sees the new token before A's status: it waits for that status
    b.on_link("MODIFIED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
    await _decide(b)  # ... and with A's status it agrees: nothing to write
    await _decide(rig.engine)
    assert ["status ns/l", "status ns/l"] == _statuses(rig)
    assert published == rig.kube.links[LINK]["status"]
    assert [("True", "Refreshed"), ("True", "Valid")] == [rig.condition("Refreshable"), rig.condition("Validated")]
    assert ["access-0", "access-1"] == rig.provider.validated


@run
async def test_a_status_decided_from_a_stale_link_is_refused_not_written_over_the_newer_one() -> None:
    rig = Rig(validate=True)
    await rig.standard(expires_in=15 * 60 + 30)
    await rig.reconcile()
    b = rig.replica("b")
    await rig.show(b)
    await _decide(b)
    rig.request_refresh("now")  # A refreshes; B still has the link as it was before
    await rig.reconcile()
    published = copy.deepcopy(rig.kube.links[LINK]["status"])
    b.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    await _decide(b)  # B never saw A's claim: it says Pending, decided from its stale link
    assert "status ns/l 409" == _statuses(rig)[-1]
    assert published == rig.kube.links[LINK]["status"]
