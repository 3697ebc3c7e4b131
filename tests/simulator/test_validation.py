"""GET /user: token validation and GitHub's rate-limit signals."""

from __future__ import annotations

import time

import pytest

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import FakeClock, validate

RATE_LIMIT_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}


def test_a_live_token_validates_with_its_login(simulator):
    """A live access token gets 200 and the user's login."""
    grant = simulator.issue_grant(CLIENT_ID, login="octocat")
    r = validate(simulator, grant.access_token)
    assert (200, "octocat") == (r.status_code, r.json()["login"])


def test_the_token_scheme_is_accepted(simulator):
    """GitHub also accepts 'Authorization: token X'."""
    grant = simulator.issue_grant(CLIENT_ID)
    assert 200 == validate(simulator, grant.access_token, scheme="token").status_code


def test_normal_answers_carry_rate_limit_headers(simulator):
    """Every normal answer has x-ratelimit-limit/remaining/reset."""
    grant = simulator.issue_grant(CLIENT_ID)
    r = validate(simulator, grant.access_token)
    assert RATE_LIMIT_HEADERS == RATE_LIMIT_HEADERS & {k for k, _ in r.headers.lower_items()}


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda sim, g: "ghu_unknown", id="an unknown token gets 401"),
        pytest.param(
            lambda sim, g: sim.expire_access_token(g.access_token) and g.access_token,
            id="an expired token gets 401",
        ),
        pytest.param(
            lambda sim, g: sim.revoke_grant(g.refresh_token) and g.access_token,
            id="a token of a revoked grant gets 401",
        ),
    ],
)
def test_dead_tokens_get_401_bad_credentials(simulator, spoil):
    grant = simulator.issue_grant(CLIENT_ID)
    r = validate(simulator, spoil(simulator, grant))
    assert (401, "Bad credentials") == (r.status_code, r.json()["message"])


def test_an_access_token_expires_after_its_lifetime(make_simulator):
    """A token with a 60 s lifetime validates at 59 s and gets 401 at 60 s."""
    clock = FakeClock()
    sim = make_simulator(access_token_lifetime=60, clock=clock)
    grant = sim.issue_grant(CLIENT_ID)
    clock.advance(59)
    assert 200 == validate(sim, grant.access_token).status_code
    clock.advance(1)
    assert 401 == validate(sim, grant.access_token).status_code


@pytest.mark.parametrize(
    ("kind", "status", "expected_headers", "message_part"),
    [
        pytest.param(
            "primary",
            403,
            {"x-ratelimit-remaining": "0"},
            "rate limit exceeded",
            id="primary limit is 403 with x-ratelimit-remaining 0",
        ),
        pytest.param(
            "secondary",
            403,
            {"retry-after": "60"},
            "secondary rate limit",
            id="secondary limit is 403 with retry-after",
        ),
        pytest.param(
            "429",
            429,
            {"retry-after": "60"},
            "Too many requests",
            id="429 carries retry-after",
        ),
    ],
)
def test_rate_limit_modes(simulator, kind, status, expected_headers, message_part):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.set_rate_limit(kind)
    r = validate(simulator, grant.access_token)
    actual_headers = {k: r.headers.get(k) for k in expected_headers}
    assert (status, expected_headers) == (r.status_code, actual_headers)
    assert message_part in r.json()["message"]


def test_primary_rate_limit_reset_is_an_epoch_in_the_future(simulator):
    """x-ratelimit-reset is reset_after seconds from now, as epoch seconds."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.set_rate_limit("primary", reset_after=30)
    reset = int(validate(simulator, grant.access_token).headers["x-ratelimit-reset"])
    assert 25 <= reset - time.time() <= 31


def test_a_counted_rate_limit_lifts_after_count_requests(simulator):
    """count=1 limits exactly the next request."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.set_rate_limit("429", count=1)
    statuses = [validate(simulator, grant.access_token).status_code for _ in range(2)]
    assert [429, 200] == statuses


def test_clearing_the_rate_limit(simulator):
    """set_rate_limit(None) lifts an open-ended limit."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.set_rate_limit("primary")
    simulator.set_rate_limit(None)
    assert 200 == validate(simulator, grant.access_token).status_code
