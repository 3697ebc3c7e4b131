"""Small HTTP helpers shared by the simulator tests (real HTTPS via requests)."""

from __future__ import annotations

from typing import Any

import requests

from providersim import Simulator
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class FakeClock:
    """A settable clock for ``Simulator(clock=...)``: time moves only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
JSON = {"Accept": "application/json"}


def refresh(
    sim: Simulator,
    refresh_token: str | None,
    *,
    session: requests.Session | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> requests.Response:
    """POST a refresh_token grant with the test client's credentials in the body."""
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **fields,
    }
    data = {k: v for k, v in data.items() if v is not None}
    post = (session or requests).post
    return post(sim.token_url, data=data, headers=headers or JSON, verify=sim.ca_file, timeout=10)


def validate(sim: Simulator, access_token: str, *, scheme: str = "Bearer") -> requests.Response:
    return requests.get(
        sim.validate_url,
        headers={"Authorization": f"{scheme} {access_token}", **JSON},
        verify=sim.ca_file,
        timeout=10,
    )


def device_code(sim: Simulator, *, client_id: str = CLIENT_ID) -> dict[str, Any]:
    r = requests.post(
        sim.device_authorization_url,
        data={"client_id": client_id, "scope": "repo"},
        headers=JSON,
        verify=sim.ca_file,
        timeout=10,
    )
    r.raise_for_status()
    return dict(r.json())


def poll(sim: Simulator, code: str) -> requests.Response:
    return requests.post(
        sim.token_url,
        data={"grant_type": DEVICE_GRANT, "device_code": code, "client_id": CLIENT_ID},
        headers=JSON,
        verify=sim.ca_file,
        timeout=10,
    )
