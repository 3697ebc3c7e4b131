"""Injected faults: latency, error statuses, dropped connections, malformed bodies."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import refresh, validate


def test_latency_fault_delays_the_answer(simulator):
    """A 0.3 s latency fault makes the token call take at least 0.3 s."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "latency", value=0.3)
    started = time.monotonic()
    r = refresh(simulator, grant.refresh_token)
    elapsed = time.monotonic() - started
    assert 200 == r.status_code
    assert elapsed >= 0.3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_fault_answers_with_that_status_and_a_json_error(simulator, status):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "status", value=status)
    r = refresh(simulator, grant.refresh_token)
    assert (status, "server_error") == (r.status_code, r.json()["error"])


def test_status_fault_can_carry_headers(simulator):
    """A 429 fault with headers={'retry-after': '2'} sends that header."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "status", value=429, headers={"retry-after": "2"})
    r = refresh(simulator, grant.refresh_token)
    assert (429, "2") == (r.status_code, r.headers.get("retry-after"))


def test_a_status_fault_does_not_consume_the_refresh_token(simulator):
    """A request answered by a fault never reaches the grant: the token still works."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "status", value=503, count=1)
    refresh(simulator, grant.refresh_token)
    assert "access_token" in refresh(simulator, grant.refresh_token).json()


def test_drop_fault_closes_the_connection_unanswered(simulator):
    """The client sees a ConnectionError."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "drop")
    with pytest.raises(requests.ConnectionError):
        refresh(simulator, grant.refresh_token)


def test_malformed_fault_answers_200_with_a_non_json_body(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "malformed")
    r = refresh(simulator, grant.refresh_token)
    assert 200 == r.status_code
    with pytest.raises(ValueError):
        r.json()


def test_counted_faults_apply_to_the_next_n_requests_only(simulator):
    """count=2 answers two requests with the fault, then behaves normally."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "status", value=502, count=2)
    statuses = [validate(simulator, grant.access_token).status_code for _ in range(3)]
    assert [502, 502, 200] == statuses


def test_faults_are_per_endpoint(simulator):
    """A validation fault leaves the token endpoint alone."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "status", value=500)
    assert 200 == refresh(simulator, grant.refresh_token).status_code


def test_clear_faults_removes_open_ended_faults(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "status", value=500)
    simulator.clear_faults()
    assert 200 == validate(simulator, grant.access_token).status_code


def test_concurrent_requests_are_served_in_parallel(simulator):
    """200 token calls with 0.1 s latency finish far below 200 x 0.1 s."""
    grants = [simulator.issue_grant(CLIENT_ID, login=f"user{i}") for i in range(200)]
    simulator.add_fault("token", "latency", value=0.1)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        responses = list(pool.map(lambda g: refresh(simulator, g.refresh_token), grants))
    elapsed = time.monotonic() - started
    assert [200] * 200 == [r.status_code for r in responses]
    assert 200 == simulator.stats.successful_refreshes
    assert elapsed < 5, f"took {elapsed:.1f}s"


def test_keep_alive_answers_are_not_delayed(simulator):
    """20 validations on one kept-alive connection take well under 20 x 40 ms (no Nagle stall)."""
    grant = simulator.issue_grant(CLIENT_ID)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {grant.access_token}"}
    ca = simulator.ca_file
    session.get(simulator.validate_url, headers=headers, verify=ca, timeout=10)
    started = time.monotonic()
    statuses = {
        session.get(simulator.validate_url, headers=headers, verify=ca, timeout=10).status_code
        for _ in range(20)
    }
    elapsed = time.monotonic() - started
    assert {200} == statuses
    assert elapsed < 0.6, f"took {elapsed:.2f}s"
