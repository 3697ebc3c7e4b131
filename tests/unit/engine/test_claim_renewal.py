"""A claim whose lease ran low before the refresh token is sent is renewed first (another
replica could take over a lease that runs out during the exchange); one with lease enough
left is not written again."""

from __future__ import annotations

from externalauth.engine.settings import Settings
from tests.unit.engine.rig import Rig, run


@run
async def test_a_claim_with_lease_enough_left_is_not_written_again() -> None:
    rig = Rig(settings=Settings(claim_lease=60.0, provider_deadline=30.0))  # renewed below 35 s
    await rig.standard(expires_in=5)
    await rig.reconcile()
    assert ["claim", "exchange", "persist"] == rig.steps("claim", "exchange", "persist")


@run
async def test_a_claim_whose_lease_is_too_short_for_the_call_is_renewed_before_sending() -> None:
    rig = Rig(settings=Settings(claim_lease=30.0, provider_deadline=30.0))  # renewed below 35 s
    await rig.standard(expires_in=5)
    await rig.reconcile()
    assert ["claim", "claim", "exchange", "persist"] == rig.steps("claim", "exchange", "persist")
