"""Rate-limit etiquette and expiry truth (issue 10, contract §9.6, §9.14), with the operator,
the real control plane and the HTTPS simulator.

- a token endpoint that rate-limits 200 due links gets no request before the reset it
  announced, and no token is lost;
- a provider whose clock is ten minutes off (either way): refreshes still come before
  the real expiry, the skew is measured, and its rate-limit resets are read on its clock;
- a static token is validated on a schedule, never on every event.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.harness.waiting import wait_for
from tests.harness.world import World, unb64

DUE = 300
TEN_MINUTES = 600.0


def metric(operator_: Any, name: str, **labels: str) -> float | None:
    """The value of one sample on the operator's /metrics, or None."""
    for line in operator_.metrics().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.index("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_rate_limited_token_endpoint_gets_nothing_before_its_reset_and_no_token_is_lost(
        make_world: Any, make_operator: Any, namespace: str) -> None:
    """200 due links; the token endpoint answers GitHub's 403 "rate limit exceeded" with its
    x-ratelimit-reset for the next 20 s. One request gets that answer; no other request
    reaches the endpoint before the reset; afterwards every link is refreshed once."""
    world = make_world()
    world.make_provider(maxConcurrentRefreshes=1)
    before = {}
    for i in range(200):
        before[f"tok-{i}"] = world.make_token_secret(f"tok-{i}", expires_in=DUE)["refresh_token"]
        world.make_link(f"link-{i}", secret=f"tok-{i}")
    world.sim.set_rate_limit("primary", endpoint="token", duration=20)
    until = world.sim.now() + 20
    operator_ = make_operator(namespaces=[namespace])
    wait_for(lambda: world.sim.stats.successful_refreshes >= 200, timeout=240,
             message=lambda: f"200 refreshes, saw {world.sim.stats.successful_refreshes}")
    calls = world.sim.calls("token")
    early = [c for c in calls if c.at < until]
    stats = world.sim.stats
    assert ([403], 200, 0, 1) == ([c.status for c in early], stats.successful_refreshes, stats.reuse_attempts,
                                  stats.max_exchanges_per_refresh_token)

    def unsaved() -> list[str]:
        secrets = world.core.list_namespaced_secret(namespace, label_selector="externalauth.io/provider").items
        stored = {s.metadata.name: unb64(s.data)["refresh_token"] for s in secrets if s.metadata.name in before}
        return [name for name, old in before.items() if stored.get(name) in (None, old)]

    # The simulator counts an exchange when it answers; the operator writes the Secret after
    # that, so the last few writes may still be on their way when the count reaches 200.
    wait_for(lambda: not unsaved(), timeout=30, message=lambda: f"every new token saved; not yet: {unsaved()}")
    assert metric(operator_, "externalauth_tokens_lost_total") is None
    assert [] == [e.reason for e in world.events() if e.reason in ("ReauthRequired", "TokenLost")]


@pytest.mark.parametrize("offset", [
    pytest.param(TEN_MINUTES, id="the provider's clock ten minutes ahead"),
    pytest.param(-TEN_MINUTES, id="the provider's clock ten minutes behind"),
])
def test_refreshes_come_before_the_real_expiry_when_the_clocks_disagree(
        make_world: Any, operator: Any, offset: float) -> None:
    """Tokens live 20 s on the simulator's clock, which is ten minutes off the operator's:
    three refreshes in a row each come while the old token still lives (on the
    simulator's clock), the link stays Ready and Valid, and the skew is measured."""
    world = make_world(clock_offset=offset, access_token_lifetime=20)
    world.make_provider()
    world.make_token_secret("tok", expires_in=20)
    world.make_link("link", secret="tok", refreshBefore="8s")
    wait_for(lambda: world.sim.stats.successful_refreshes >= 3, timeout=90,
             message=lambda: f"three refreshes, saw {world.sim.stats.successful_refreshes}")
    world.wait_condition("link", "Ready", "True", "TokenCurrent")
    world.wait_condition("link", "Validated", "True", "Valid")
    skew = metric(operator, "externalauth_provider_clock_skew_seconds", provider=world.provider)
    assert (0, True) == (world.sim.stats.late_refreshes, skew is not None and abs(skew - offset) < 5)


@pytest.mark.parametrize("offset", [
    pytest.param(TEN_MINUTES, id="the provider's clock ten minutes ahead"),
    pytest.param(-TEN_MINUTES, id="the provider's clock ten minutes behind"),
])
def test_a_rate_limit_reset_is_read_on_the_providers_clock(make_world: Any, operator: Any, offset: float) -> None:
    """GitHub's x-ratelimit-reset is a Unix time on the provider's clock: the next validation
    comes after the 20 s it announced, not at once (provider behind) nor ten minutes late
    (provider ahead)."""
    world = make_world(clock_offset=offset)
    world.make_provider()
    world.make_token_secret("tok", expires_in=None, refresh=None,
                            access=world.sim.issue_grant(CLIENT_ID).access_token)
    world.sim.set_rate_limit("primary", count=1, reset_after=20)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Validated", "Unknown", "RateLimited")
    world.wait_condition("link", "Validated", "True", "Valid", timeout=60)
    first, second = world.sim.calls("validate")[:2]
    assert (403, 200, True) == (first.status, second.status, 20 <= second.at - first.at < 40)


def test_a_static_token_is_validated_on_a_schedule_not_on_every_event(
        world: World, make_operator: Any, namespace: str) -> None:
    """A Secret without a refresh token is validated once, then again after the validation
    interval (10 s here), however many link and Secret events come in between; the budget
    the provider announced is on /metrics."""
    operator_ = make_operator(namespaces=[namespace], extra_args=("--validation-interval", "10s"))
    world.make_provider()
    world.make_token_secret("tok", expires_in=None, refresh=None,
                            access=world.sim.issue_grant(CLIENT_ID).access_token)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Validated", "True", "Valid")
    for i in range(10):
        world.co.patch_namespaced_custom_object("externalauth.io", "v1alpha1", namespace, "externalauthlinks",
                                                "link", {"spec": {"refreshBefore": f"{16 + i}m"}})
        world.core.patch_namespaced_secret("tok", namespace,
                                           {"metadata": {"annotations": {"touched": str(i)}}})
        wait_for(lambda: (world.link("link").get("status") or {}).get("observedGeneration")
                 == world.link("link")["metadata"]["generation"], timeout=10, message="the event handled")
    during = world.sim.stats.validation_calls
    wait_for(lambda: world.sim.stats.validation_calls >= 2, timeout=30, message="the scheduled validation")
    first, second = world.sim.calls("validate")[:2]
    remaining = metric(operator_, "externalauth_provider_ratelimit_remaining", provider=world.provider,
                       endpoint="validate")
    assert (1, True, True) == (during, second.at - first.at >= 10, remaining is not None and remaining > 0)

