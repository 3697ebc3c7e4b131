"""RFC 8628 device authorization: pending, slow_down, approval, denial, expiry."""

from __future__ import annotations

import pytest
import requests

from tests.simulator.helpers import FakeClock, device_code, poll, validate


def test_device_authorization_answers_the_rfc_8628_fields(simulator):
    """The answer has a device code, a user code like ABCD-1234 and our verification URI."""
    d = device_code(simulator)
    assert {"device_code", "user_code", "verification_uri", "expires_in", "interval"} == set(d)
    assert (simulator.url + "/login/device", 1) == (d["verification_uri"], d["interval"])
    assert 9 == len(d["user_code"]) and "-" == d["user_code"][4]


def test_polling_before_approval_is_authorization_pending(simulator):
    d = device_code(simulator)
    assert "authorization_pending" == poll(simulator, d["device_code"]).json()["error"]


def test_polling_faster_than_the_interval_is_slow_down_with_a_bumped_interval(simulator):
    """A second poll within the interval gets slow_down and interval + increment."""
    d = device_code(simulator)
    poll(simulator, d["device_code"])
    body = poll(simulator, d["device_code"]).json()
    assert ("slow_down", 2) == (body["error"], body["interval"])


def test_after_approval_the_poll_returns_a_grant_for_the_approved_login(make_simulator):
    """Approve, let the interval pass, poll: tokens that validate as the approved user."""
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    d = device_code(sim)
    assert "authorization_pending" == poll(sim, d["device_code"]).json()["error"]
    sim.approve_device(d["user_code"], login="bob")
    clock.advance(d["interval"])
    body = poll(sim, d["device_code"]).json()
    assert {"access_token", "refresh_token"} <= set(body), body
    assert "bob" == validate(sim, body["access_token"]).json()["login"]


@pytest.mark.parametrize(
    ("act", "expected"),
    [
        pytest.param(
            lambda sim, code: sim.deny_device(code),
            "access_denied",
            id="a denied request polls as access_denied",
        ),
        pytest.param(
            lambda sim, code: sim.expire_device_code(code),
            "expired_token",
            id="an expired device code polls as expired_token",
        ),
    ],
)
def test_terminal_device_errors(simulator, act, expected):
    d = device_code(simulator)
    act(simulator, d["user_code"])
    assert expected == poll(simulator, d["device_code"]).json()["error"]


def test_device_code_expires_after_its_lifetime(make_simulator):
    """A 60 s device code still polls as pending at 59 s and as expired_token at 60 s."""
    clock = FakeClock()
    sim = make_simulator(device_code_lifetime=60, clock=clock)
    d = device_code(sim)
    clock.advance(59)
    assert "authorization_pending" == poll(sim, d["device_code"]).json()["error"]
    clock.advance(1)
    assert "expired_token" == poll(sim, d["device_code"]).json()["error"]


def test_auto_approve_after_n_polls(make_simulator):
    """device_auto_approve_after=1 approves on the first poll."""
    sim = make_simulator(device_auto_approve_after=1)
    d = device_code(sim)
    assert "access_token" in poll(sim, d["device_code"]).json()


def test_generic_mode_device_errors_are_http_400(make_simulator):
    """RFC 8628 3.5: polling errors are 400 in generic mode."""
    sim = make_simulator(mode="generic")
    d = device_code(sim)
    r = poll(sim, d["device_code"])
    assert (400, "authorization_pending") == (r.status_code, r.json()["error"])


def test_a_device_code_is_used_once(make_simulator):
    """After its tokens were issued the device code is no longer accepted."""
    sim = make_simulator(device_auto_approve_after=1)
    d = device_code(sim)
    poll(sim, d["device_code"])
    assert "incorrect_device_code" == poll(sim, d["device_code"]).json()["error"]


def test_unknown_client_cannot_start_a_device_flow(simulator):
    """The device endpoint rejects an unregistered client id."""
    r = requests.post(
        simulator.device_authorization_url,
        data={"client_id": "nobody"},
        headers={"Accept": "application/json"},
        verify=simulator.ca_file,
        timeout=10,
    )
    assert "incorrect_client_credentials" == r.json()["error"]
