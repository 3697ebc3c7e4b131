"""Pytest fixtures for the provider simulator (register with ``pytest_plugins``).

- ``simulator``: a started github-mode ``providersim.Simulator`` with short
  lifetimes (access token 120 s, device interval 1 s) and one confidential
  client ``CLIENT_ID``/``CLIENT_SECRET`` registered; stopped after the test.
- ``make_simulator(**kwargs)``: a factory for any other configuration; the
  same test defaults apply unless overridden, the same client is registered,
  and every simulator it made is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from providersim import Simulator

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret"

TEST_DEFAULTS: dict[str, Any] = {
    "mode": "github",
    "access_token_lifetime": 120,
    "device_interval": 1,
    "slow_down_increment": 1,
    "device_code_lifetime": 60,
}


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """A factory of started simulators, all stopped at teardown."""
    started: list[Simulator] = []

    def make(**kwargs: Any) -> Simulator:
        sim = Simulator(**{**TEST_DEFAULTS, **kwargs})
        sim.start()
        started.append(sim)
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    """A started github-mode simulator with short lifetimes and CLIENT_ID registered."""
    return make_simulator()
