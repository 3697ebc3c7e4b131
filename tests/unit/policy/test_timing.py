"""Every "when" of policy/timing.py at its edges: the half-lifetime bound, the clamp
note, the request burst, the jitter bounds of backoff and the steps and caps of the
retries (persist, re-read, validation, revocation, watch)."""

from __future__ import annotations

import datetime as dt

import pytest

from externalauth.policy import timing

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)
S = dt.timedelta(seconds=1)
LINKS = [f"ns/link-{i}" for i in range(1000)]


@pytest.mark.parametrize(("issued", "expiry", "refresh_before", "due"), [
    pytest.param(None, NOW + 8 * H, 15 * M, NOW + 8 * H - 15 * M,
                 id="issue time unknown: expiry minus refreshBefore, no jitter"),
    pytest.param(NOW + 8 * H, NOW + 8 * H, 15 * M, NOW + 8 * H - 15 * M,
                 id="issued at its expiry (a zero lifetime): expiry minus refreshBefore, not the expiry"),
    pytest.param(NOW + 9 * H, NOW + 8 * H, 15 * M, NOW + 8 * H - 15 * M,
                 id="issued after its expiry (a clock off): expiry minus refreshBefore"),
    pytest.param(NOW, NOW + 8 * H, 6 * H, NOW + 4 * H,
                 id="refreshBefore beyond half the lifetime: due at half the lifetime"),
    pytest.param(None, None, 15 * M, None, id="no expiry: None (refresh at once to learn it)"),
])
def test_when_a_refresh_is_due(issued: dt.datetime | None, expiry: dt.datetime | None,
                               refresh_before: dt.timedelta, due: dt.datetime | None) -> None:
    assert due == timing.due_at(expiry=expiry, refresh_before=refresh_before, issued_at=issued, seed="ns/l")


@pytest.mark.parametrize(("issued", "expiry", "refresh_before", "clamps"), [
    pytest.param(NOW, NOW + 8 * H, 15 * M, False, id="15 minutes of an 8-hour token: not clamped"),
    pytest.param(NOW, NOW + 8 * H, 4 * H, False, id="exactly half the lifetime: not clamped"),
    pytest.param(NOW, NOW + 8 * H, 4 * H + S, True, id="a second more than half the lifetime: clamped"),
    pytest.param(None, NOW + 8 * H, 9 * H, False, id="issue time unknown: nothing to clamp against"),
    pytest.param(NOW, None, 9 * H, False, id="no expiry: nothing to clamp"),
    pytest.param(NOW + 8 * H, NOW + 8 * H, 15 * M, False, id="issued at its expiry: no lifetime, no clamp"),
    pytest.param(NOW + 9 * H, NOW + 8 * H, 15 * M, False, id="issued after its expiry: no clamp"),
])
def test_when_refresh_before_is_clamped(issued: dt.datetime | None, expiry: dt.datetime | None,
                                        refresh_before: dt.timedelta, clamps: bool) -> None:
    assert clamps == timing.clamped(expiry=expiry, refresh_before=refresh_before, issued_at=issued)


@pytest.mark.parametrize(("asked", "allowed"), [
    pytest.param((), NOW, id="no request yet: at once"),
    pytest.param((NOW - 50 * S, NOW - 40 * S), NOW, id="two in the last minute: the third at once"),
    pytest.param((NOW - 50 * S, NOW - 40 * S, NOW - 30 * S), NOW + 10 * S,
                 id="three in the last minute: a minute after the oldest of them"),
    pytest.param((NOW - 60 * S, NOW - 40 * S, NOW - 30 * S), NOW,
                 id="a request exactly a minute old no longer counts"),
    pytest.param((NOW - 90 * S, NOW - 50 * S, NOW - 40 * S, NOW - 30 * S), NOW + 10 * S,
                 id="only the last three count"),
])
def test_refresh_requests_are_honoured_three_a_minute(asked: tuple[dt.datetime, ...],
                                                      allowed: dt.datetime) -> None:
    assert allowed == timing.request_allowed_at(asked, NOW)


@pytest.mark.parametrize(("failures", "base_cap", "exp"), [
    pytest.param(1, None, 2.0, id="first failure: 2 s, ±20 %"),
    pytest.param(4, None, 16.0, id="doubling with each failure"),
    pytest.param(30, None, 300.0, id="at most 300 s, ±20 %"),
    pytest.param(2, (30.0, 600.0), 60.0, id="another base"),
    pytest.param(8, (30.0, 600.0), 600.0, id="another cap"),
])
def test_backoff_jitter_stays_within_twenty_percent_and_uses_all_of_it(
        failures: int, base_cap: tuple[float, float] | None, exp: float) -> None:
    """Over a thousand links, waits spread over [0.8, 1.2] x the exponential step, and
    never beyond."""
    waits = [timing.backoff(failures=failures, seed=seed) if base_cap is None else
             timing.backoff(failures=failures, seed=seed, base=base_cap[0], cap=base_cap[1]) for seed in LINKS]
    assert (True, True) == (min(waits) >= 0.8 * exp, max(waits) <= 1.2 * exp)
    assert (True, True) == (min(waits) < 0.81 * exp, max(waits) > 1.19 * exp)


@pytest.mark.parametrize(("seconds", "capped"), [
    pytest.param(0.5, 0.5, id="half a second stays half a second"),
    pytest.param(120.0, 120.0, id="two minutes stay two minutes"),
    pytest.param(7200.0, 3600.0, id="at most an hour"),
    pytest.param(-5.0, 0.0, id="a negative one is none"),
    pytest.param(float("nan"), 0.0, id="NaN is none"),
])
def test_a_providers_retry_after_is_capped(seconds: float, capped: float) -> None:
    assert capped == timing.capped_retry_after(seconds)


@pytest.mark.parametrize(("failures", "retry_after", "cap", "low", "high"), [
    pytest.param(1, 120.0, 3600.0, 121.0, 121.0, id="the provider's reset, and a second more"),
    pytest.param(1, 0.0, 3600.0, 1.0, 1.0, id="a reset now: a second later"),
    pytest.param(1, 7200.0, 3600.0, 3601.0, 3601.0, id="a reset beyond an hour: an hour and a second"),
    pytest.param(1, None, 3600.0, 24.0, 36.0, id="no reset named: 30 s, ±20 %"),
    pytest.param(3, None, 3600.0, 96.0, 144.0, id="doubling from 30 s"),
    pytest.param(6, None, 600.0, 480.0, 720.0, id="capped by the cap given"),
])
def test_a_validation_without_a_verdict_is_tried_again(failures: int, retry_after: float | None, cap: float,
                                                       low: float, high: float) -> None:
    wait = timing.validation_retry(failures=failures, seed="ns/l", retry_after=retry_after, cap=cap)
    assert low <= wait <= high


def test_validation_retries_of_different_links_are_spread() -> None:
    waits = {timing.validation_retry(failures=2, seed=seed, retry_after=None, cap=3600.0) for seed in LINKS[:20]}
    assert 20 == len(waits)


@pytest.mark.parametrize(("attempt", "wait"), [
    pytest.param(1, 0.4, id="a failed token write is tried again after 0.4 s"),
    pytest.param(2, 0.8, id="then 0.8 s"),
    pytest.param(3, 1.6, id="doubling"),
    pytest.param(5, 6.4, id="6.4 s at the fifth"),
    pytest.param(6, 10.0, id="at most 10 s"),
    pytest.param(100, 10.0, id="still 10 s much later"),
])
def test_persist_retry(attempt: int, wait: float) -> None:
    assert wait == pytest.approx(timing.persist_retry(attempt))


@pytest.mark.parametrize(("attempt", "wait"), [
    pytest.param(1, 0.2, id="a failed re-read after a conflict is tried again after 0.2 s"),
    pytest.param(2, 0.4, id="0.2 s more each attempt"),
    pytest.param(25, 5.0, id="5 s at the 25th"),
    pytest.param(100, 5.0, id="at most 5 s"),
])
def test_reread_retry(attempt: int, wait: float) -> None:
    assert wait == pytest.approx(timing.reread_retry(attempt))


@pytest.mark.parametrize(("attempt", "retry_after", "wait"), [
    pytest.param(1, None, 2.0, id="a failed revocation is tried again after 2 s"),
    pytest.param(2, None, 4.0, id="then 4 s"),
    pytest.param(3, None, 8.0, id="doubling"),
    pytest.param(4, None, 16.0, id="16 s at the fourth"),
    pytest.param(5, None, 30.0, id="at most 30 s"),
    pytest.param(50, None, 30.0, id="still 30 s much later"),
    pytest.param(1, 60.0, 60.0, id="the provider's Retry-After when longer"),
    pytest.param(3, 1.0, 8.0, id="the step when the Retry-After is shorter"),
    pytest.param(1, 7200.0, 3600.0, id="a Retry-After capped at an hour"),
])
def test_revocation_retry(attempt: int, retry_after: float | None, wait: float) -> None:
    assert wait == timing.revocation_retry(attempt=attempt, retry_after=retry_after)
