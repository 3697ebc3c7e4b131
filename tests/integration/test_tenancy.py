"""Safe to install among tenants, careless users and odd input (contract §3, §5, §9.11
to §9.14), against the real control plane and the HTTPS simulator."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.harness.waiting import wait_for
from tests.harness.world import World, rfc3339

DUE = 300
NOT_DUE = 3600


def message(world: World, link: str, kind: str) -> str:
    return str((world.condition(link, kind) or {}).get("message", ""))


def test_a_link_cannot_steer_the_operator_into_a_secret_that_did_not_opt_in(world: World,
                                                                            operator: Any) -> None:
    """Confused deputy: Mallory's link names Bob's Secret (opted in to another provider) and
    an unlabelled Secret, and asks for a refresh. Neither token is sent anywhere; neither
    Secret is read, written, labelled or annotated."""
    world.make_provider()
    team = world.make_provider(f"team-{world.ns}"[:63])
    world.make_token_secret("bob-github", expires_in=DUE)  # opted in to world.provider
    world.make_token_secret("docker", expires_in=DUE, labels={"app": "registry"})
    before = {name: world.secret(name).metadata for name in ("bob-github", "docker")}
    world.make_link("mallory", secret="bob-github", provider=team)
    world.make_link("mallory2", secret="docker", provider=team)
    world.request_refresh("mallory")
    world.wait_condition("mallory", "Ready", "False", "SecretNotOptedIn")
    world.wait_condition("mallory2", "Ready", "False", "SecretNotOptedIn")
    assert f"externalauth.io/provider={team}" in message(world, "mallory2", "Ready")
    assert (0, 0) == (world.sim.stats.token_calls, world.sim.stats.validation_calls)
    for name, meta in before.items():
        now = world.secret(name).metadata
        assert (meta.labels, meta.annotations, meta.resource_version) == (
            now.labels, now.annotations, now.resource_version), name


def test_refresh_before_as_long_as_the_token_lifetime_is_not_a_refresh_loop(make_world: Any,
                                                                           operator: Any) -> None:
    """refreshBefore ≥ the token's lifetime (1 h tokens, refreshBefore 2h): one refresh, then
    the next one planned at half the lifetime, and the link says refreshBefore was clamped."""
    world = make_world(access_token_lifetime=3600)
    world.make_provider()
    world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok", refreshBefore="2h")
    wait_for(lambda: "refreshBefore is more than half" in message(world, "link", "Refreshable"),
             timeout=30, message="the clamp to be reported")
    status = world.link("link")["status"]
    planned, last = (dt.datetime.fromisoformat(status[k].replace("Z", "+00:00"))
                     for k in ("nextRefreshTime", "lastRefreshTime"))
    assert dt.timedelta(minutes=30) - dt.timedelta(seconds=1) <= planned - last, status
    assert 1 == world.sim.stats.token_calls


def test_an_immutable_secret_is_never_refreshed(world: World, operator: Any) -> None:
    """Never spend what cannot be stored: the refresh token stays unspent."""
    world.make_provider()
    grant = world.sim.issue_grant(CLIENT_ID)
    world.core.create_namespaced_secret(world.ns, {
        "metadata": {"name": "frozen", "labels": {"externalauth.io/provider": world.provider}},
        "immutable": True, "stringData": {
            "access_token": grant.access_token, "refresh_token": grant.refresh_token,
            "expiry": rfc3339(dt.datetime.now(dt.UTC))}})
    world.make_link("link", secret="frozen")
    world.wait_condition("link", "Ready", "False", "SecretInvalid")
    assert "immutable" in message(world, "link", "Ready")
    assert 0 == world.sim.stats.token_calls


def test_a_secret_deleted_during_the_exchange_is_a_token_lost_said_once(make_world: Any,
                                                                       operator: Any) -> None:
    """The provider answered, the Secret is gone: TokenLost (event and metric), SecretNotFound,
    and no write retried forever."""
    world = make_world(latency=2.0)
    world.make_provider(validateURL="")
    world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    wait_for(lambda: "externalauth.io/refresh-claim" in (world.secret("tok").metadata.annotations or {}),
             timeout=30, message="the claim before the exchange")
    world.core.delete_namespaced_secret("tok", world.ns)
    wait_for(lambda: "TokenLost" in world.event_reasons("link"), timeout=30, message="TokenLost")
    world.wait_condition("link", "Ready", "False", "SecretNotFound")
    wait_for(lambda: f'externalauth_tokens_lost_total{{provider="{world.provider}",reason="gone"}} 1.0'
             in (operator.metrics() or ""), timeout=10, message="the lost-token metric")
    assert 1 == world.sim.stats.token_calls
    assert operator.logs().count("was deleted while its token was refreshed") == 1


def test_a_forged_endless_claim_does_not_block_the_link(world: World, operator: Any) -> None:
    """someone;inf in the claim annotation is not a claim any operator could have written."""
    world.make_provider()
    before = world.make_token_secret("tok", expires_in=NOT_DUE)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Ready", "True")
    world.core.patch_namespaced_secret("tok", world.ns, {"metadata": {"annotations": {
        "externalauth.io/refresh-claim": "someone;inf"}}})
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    assert before["refresh_token"] != world.secret_data("tok")["refresh_token"]


def test_an_overlong_refresh_request_is_refused_and_the_status_stays_writable(world: World,
                                                                             operator: Any) -> None:
    world.make_provider()
    world.make_token_secret("tok", expires_in=NOT_DUE)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Ready", "True")
    world.request_refresh("link", "x" * 300)
    wait_for(lambda: "InvalidInput" in world.event_reasons("link"), timeout=15, message="InvalidInput")
    request = world.request_refresh("link", "short")
    world.wait_refreshed("link", request)
    assert 1 == world.sim.stats.token_calls


def test_a_client_secret_outside_the_operator_namespace_is_not_read(world: World, operator: Any,
                                                                   core_v1: Any) -> None:
    """clientSecretRef may name only the operator's own namespace."""
    name = world.make_provider(clientSecretRef={"namespace": "default", "name": "stolen", "key": "k"})
    wait_for(lambda: (world.provider_condition(name) or {}).get("reason") == "InvalidSpec", timeout=15,
             message="InvalidSpec")
    assert "operator's namespace" in str((world.provider_condition(name) or {}).get("message"))


def test_a_ca_bundle_that_does_not_parse_fails_only_its_provider(world: World, operator: Any) -> None:
    broken = world.make_provider(f"broken-{world.ns}"[:63], caBundle=(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"))
    world.make_provider()
    wait_for(lambda: (world.provider_condition(broken) or {}).get("reason") == "InvalidSpec", timeout=15,
             message="InvalidSpec for the broken provider")
    before = world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    wait_for(lambda: world.secret_data("tok")["refresh_token"] != before["refresh_token"], timeout=30,
             message="the healthy provider's link refreshed")


def test_a_provider_serves_only_the_namespaces_its_selector_names(world: World, operator: Any) -> None:
    """spec.namespaceSelector (contract §1, §9.16): a due link in a namespace the provider does
    not select is Ready=False ProviderNotAllowed and no token of it reaches the provider, even
    when a refresh is requested; labelling the namespace lets the link refresh, and taking
    the label away stops it again (the operator watches namespaces' labels)."""
    label = f"tenant-{world.ns}"[:63]
    world.make_provider(namespaceSelector={"matchExpressions": [
        {"key": "externalauth.io/tenant", "operator": "In", "values": [label]}]})
    world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    world.request_refresh("link", "please")
    world.wait_condition("link", "Ready", "False", "ProviderNotAllowed")
    assert "externalauth.io/tenant in" not in message(world, "link", "Ready")  # one value: key=value
    assert f"externalauth.io/tenant={label}" in message(world, "link", "Ready")
    assert (0, 0) == (world.sim.stats.token_calls, world.sim.stats.validation_calls)
    before = world.secret_data("tok")["refresh_token"]

    world.core.patch_namespace(world.ns, {"metadata": {"labels": {"externalauth.io/tenant": label}}})
    wait_for(lambda: world.secret_data("tok")["refresh_token"] != before, timeout=30,
             message="the link to refresh once its namespace is selected")
    world.wait_condition("link", "Ready", "True", "TokenCurrent")

    world.core.patch_namespace(world.ns, {"metadata": {"labels": {"externalauth.io/tenant": None}}})
    world.wait_condition("link", "Ready", "False", "ProviderNotAllowed")
    calls = world.sim.stats.token_calls
    world.request_refresh("link", "again")
    wait_for(lambda: (world.link("link").get("status") or {}).get("lastRefreshRequest") == "again",
             timeout=30, message="the request to be acknowledged")
    assert calls == world.sim.stats.token_calls


def test_calls_that_are_not_due_are_budgeted_per_namespace(world: World, make_operator: Any,
                                                          core_v1: Any) -> None:
    """Contract §9.16: namespace A holds 60 labelled Secrets with junk refresh tokens and no
    expiry (each one a call with the OAuth app's client secret, not due by any expiry). At
    start-up A's calls come 50 at once and then one a second, not 60 at once; namespace B's
    own link without an expiry is refreshed meanwhile from B's own budget; every one of A's
    links is still answered (ReauthRequired), later."""
    other = f"{world.ns}-b"[:63]
    core_v1.create_namespace({"metadata": {"name": other}})
    try:
        world.make_provider()
        for i in range(60):
            world.make_token_secret(f"junk-{i}", expires_in=None, access=f"junk-{i}", refresh=f"junk-{i}")
            world.make_link(f"junk-{i}", secret=f"junk-{i}", validate=False)
        b = World(namespace=other, core_v1=core_v1, custom_objects=world.co, sim=world.sim)
        b.provider = world.provider
        b.make_token_secret("tok", expires_in=None)
        b.make_link("link", secret="tok", validate=False)
        make_operator(namespaces=[world.ns, other])
        started = time.monotonic()
        b.wait_condition("link", "Refreshable", "True", timeout=60)
        wait_for(lambda: world.sim.stats.token_calls >= 50, timeout=60, message="A's burst")
        burst_seen = time.monotonic()
        assert world.sim.stats.token_calls <= 51 + (burst_seen - started), "beyond the burst, one a second"
        for i in range(60):
            world.wait_condition(f"junk-{i}", "Ready", "False", "ReauthRequired", timeout=90)
        spread = time.monotonic() - started
        assert spread >= 9, f"A's 10 calls beyond its burst came one a second, not at once ({spread:.1f}s)"
        assert 61 == world.sim.stats.token_calls
    finally:
        core_v1.delete_namespace(other)
