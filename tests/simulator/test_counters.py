"""The simulator's counters, which benchmarks and invariant tests read."""

from __future__ import annotations

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import device_code, refresh, validate


def test_counters_count_calls_exchanges_and_reuse(simulator):
    """Two exchanges, one reuse, one validation and one device call, each counted once."""
    grant = simulator.issue_grant(CLIENT_ID)
    first = refresh(simulator, grant.refresh_token).json()
    refresh(simulator, first["refresh_token"])
    refresh(simulator, grant.refresh_token)
    validate(simulator, first["access_token"])
    device_code(simulator)
    s = simulator.stats
    actual = (
        s.token_calls,
        s.validation_calls,
        s.device_calls,
        s.reuse_attempts,
        s.max_exchanges_per_refresh_token,
        s.successful_refreshes,
    )
    assert (3, 1, 1, 1, 1, 2) == actual
    assert {grant.refresh_token: 1, first["refresh_token"]: 1} == s.exchanges_by_refresh_token


def test_refusals_are_counted_per_dead_refresh_token(simulator):
    """Each call with a dead refresh token (spent, revoked, unknown) is counted against that
    token; a successful exchange is not a refusal."""
    grant = simulator.issue_grant(CLIENT_ID)
    revoked = simulator.issue_grant(CLIENT_ID)
    simulator.revoke_grant(revoked.refresh_token)
    refresh(simulator, grant.refresh_token)
    refresh(simulator, grant.refresh_token)
    refresh(simulator, grant.refresh_token)
    refresh(simulator, revoked.refresh_token)
    refresh(simulator, "unknown")
    s = simulator.stats
    assert {grant.refresh_token: 2, revoked.refresh_token: 1, "unknown": 1} == s.refusals_by_refresh_token
    assert 2 == s.max_refusals_per_refresh_token


def test_requests_are_counted_by_endpoint_and_status(simulator):
    """by_status splits each endpoint's requests by HTTP status (or 'drop')."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.add_fault("validate", "status", value=503, count=1)
    validate(simulator, grant.access_token)
    validate(simulator, grant.access_token)
    validate(simulator, "ghu_unknown")
    assert {"validate": {503: 1, 200: 1, 401: 1}} == simulator.stats.by_status


def test_reset_stats_zeroes_the_counters(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    refresh(simulator, grant.refresh_token)
    refresh(simulator, grant.refresh_token)
    simulator.reset_stats()
    s = simulator.stats
    assert (0, {}, {}, {}) == (s.token_calls, s.exchanges_by_refresh_token, s.by_status,
                              s.refusals_by_refresh_token)


def test_stats_repr_shows_no_token(simulator):
    """The stats snapshot and grants never print token values."""
    grant = simulator.issue_grant(CLIENT_ID)
    refresh(simulator, grant.refresh_token)
    printed = repr(simulator.stats) + repr(grant)
    assert grant.refresh_token not in printed and grant.access_token not in printed
