"""Hostile provider modes: redirects to another origin, arbitrary bodies, huge bodies, trickled
answers; and the request counter that proves whether anything reached a second origin."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import JSON, refresh, validate


@pytest.mark.parametrize("status", [307, 308])
def test_redirect_fault_answers_the_status_and_location(make_simulator, status):
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "redirect", value=status, headers={"location": "https://elsewhere.example/t"})
    r = requests.post(sim.token_url, data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token},
                      headers=JSON, verify=sim.ca_file, timeout=10, allow_redirects=False)
    assert (status, "https://elsewhere.example/t") == (r.status_code, r.headers["location"])


def test_a_redirect_fault_needs_a_location(simulator):
    with pytest.raises(ValueError, match="location"):
        simulator.add_fault("token", "redirect", value=307)


def test_requests_received_counts_every_path(make_simulator):
    """Known endpoints, unknown paths and anything else count; the control API does not."""
    sim = make_simulator()
    requests.get(sim.url + "/nowhere", verify=sim.ca_file, timeout=10)
    requests.post(sim.token_url, data={}, verify=sim.ca_file, timeout=10)
    requests.get(sim.url + "/_sim/stats", verify=sim.ca_file, timeout=10)
    assert 2 == sim.stats.requests_received


def test_a_client_that_follows_redirects_reaches_the_second_simulator(make_simulator, tmp_path):
    """Two simulators sharing one CA (one state dir): a naive client that follows the 307 re-sends
    the refresh token to the second origin, which counts it (what the operator must never do)."""
    first, second = make_simulator(state_dir=tmp_path), make_simulator(state_dir=tmp_path)
    grant = first.issue_grant(CLIENT_ID)
    first.add_fault("token", "redirect", value=307, headers={"location": second.token_url})
    r = refresh(first, grant.refresh_token)
    assert (1, 1, [307]) == (first.stats.requests_received, second.stats.requests_received,
                             [h.status_code for h in r.history])


def test_body_fault_answers_any_json_value_with_200(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("token", "body", value=[{"access_token": "x", "expires_in": 1e308}])
    r = refresh(simulator, grant.refresh_token)
    assert (200, [{"access_token": "x", "expires_in": 1e308}]) == (r.status_code, r.json())


def test_huge_fault_streams_a_body_of_that_size(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "huge", value=3 * 1024 * 1024 + 7)
    r = validate(simulator, grant.access_token)
    assert (200, 3 * 1024 * 1024 + 7, "aaa") == (r.status_code, len(r.content), r.json()["login"][:3])


def test_trickle_fault_sends_the_real_answer_one_byte_at_a_time(simulator):
    """A raw TLS socket sees the status line arrive byte by byte, slower than the interval."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "trickle", value=0.05, count=1)
    ctx = ssl.create_default_context(cafile=simulator.ca_file)
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(f"GET /user HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {grant.access_token}\r\n"
                    "Content-Length: 0\r\n\r\n".encode())
        started = time.monotonic()
        first = tls.recv(100)
        second = tls.recv(100)
        third = tls.recv(100)
        elapsed = time.monotonic() - started
    assert (b"H", b"T", b"T") == (first, second, third)
    assert elapsed >= 0.1
