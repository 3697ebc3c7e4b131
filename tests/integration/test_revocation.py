"""Revocation on unlink (issue 20, contract §2 revokeOnDelete, §6, §9.17), end to end: the
operator, the real control plane and the HTTPS simulator in each type's dialect. Deleting
a link that asks for it revokes the grant at the provider (dead there afterwards) before
the link goes; types without revocation say what to do by hand; a provider that does not
answer delays the deletion only up to --revocation-timeout; two replicas revoke once."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from kubernetes.client import ApiException

from tests.harness.waiting import wait_for
from tests.harness.world import G, V, World
from tests.integration.test_provider_types import NOT_DUE, TYPES, Type, make_provider, token_secret

FINALIZER = "externalauth.io/revoke"


def _gone(world: World, name: str) -> bool:
    try:
        world.link(name)
    except ApiException as e:
        return e.status == 404
    return False


def _unlink(world: World, kind: Type, *, timeout: float = 30) -> dict[str, str]:
    """A linked Secret whose link asks for revocation; the link gets the finalizer, then is
    deleted, and goes. Returns the tokens the Secret held."""
    tokens = token_secret(world, kind, "tok", expires_in=NOT_DUE)
    world.make_link("link", secret="tok", revokeOnDelete=True)
    world.wait_condition("link", "Ready", "True")
    wait_for(lambda: FINALIZER in (world.link("link")["metadata"].get("finalizers") or []), timeout=30,
             message=lambda: f"the finalizer on the link: {world.link('link')['metadata']}")
    world.co.delete_namespaced_custom_object(G, V, world.ns, "externalauthlinks", "link")
    wait_for(lambda: _gone(world, "link"), timeout=timeout, message="the link to go")
    return tokens


def _live(world: World, access_token: str) -> bool:
    r = requests.get(world.sim.validate_url, headers={"Authorization": f"Bearer {access_token}"},
                     verify=world.sim.ca_file, timeout=10)
    return r.status_code == 200


def _event(world: World, reason: str) -> Any:
    return wait_for(lambda: next((e for e in world.events("link") if e.reason == reason), None), timeout=15,
                    message=lambda: f"a {reason} event; events: {world.event_reasons('link')}")


@pytest.mark.parametrize("name", ["github-enterprise", "gitlab", "generic-oidc"])
def test_deleting_a_link_revokes_its_grant_at_the_provider(make_world: Any, operator: Any, name: str) -> None:
    """GitHub's grant API, GitLab's RFC 7009 endpoint, a generic server's discovered
    revocation_endpoint: afterwards the grant is dead at the provider."""
    kind = TYPES[name]
    world = make_world(profile=kind.profile, **kind.sim)
    make_provider(world, kind)
    tokens = _unlink(world, kind)
    stats = world.sim.stats
    assert (1, False) == (stats.grants_revoked_by_request, _live(world, tokens["access_token"]))
    assert "at the provider" in _event(world, "Revoked").message
    assert 0 == stats.exchanges_by_refresh_token.get(tokens["refresh_token"], 0)  # never refreshed on the way out


@pytest.mark.parametrize(("name", "manual"), [("bitbucket-cloud", "App authorizations"),
                                              ("gitea", "Authorized OAuth2 Applications"),
                                              ("azure-devops-entra", "myapps.microsoft.com")])
def test_a_type_without_revocation_says_what_to_do_by_hand(make_world: Any, operator: Any, name: str,
                                                           manual: str) -> None:
    kind = TYPES[name]
    world = make_world(profile=kind.profile, **kind.sim)
    make_provider(world, kind)
    tokens = _unlink(world, kind)
    message = _event(world, "RevocationFailed").message
    assert "no revocation endpoint" in message and manual in message
    assert (0, True) == (world.sim.stats.revocation_calls, _live(world, tokens["access_token"]))
    assert tokens["access_token"] not in message and tokens["refresh_token"] not in message


def test_a_provider_that_does_not_answer_delays_the_deletion_only_up_to_the_timeout(
        make_world: Any, make_operator: Any, namespace: str) -> None:
    make_operator(namespaces=[namespace], extra_args=("--revocation-timeout", "8s"))
    kind = TYPES["gitlab"]
    world = make_world(profile=kind.profile)
    world.sim.add_fault("revoke", "status", value=503)  # every revocation, forever
    make_provider(world, kind)
    _unlink(world, kind, timeout=40)
    assert "could not be reached for 8s" in _event(world, "RevocationFailed").message
    assert world.sim.stats.revocation_calls >= 2  # retried with backoff before giving up


def test_two_replicas_revoke_a_grant_once(make_world: Any, make_operator: Any, namespace: str) -> None:
    make_operator(namespaces=[namespace])
    make_operator(namespaces=[namespace])
    kind = TYPES["github-enterprise"]
    world = make_world(profile=kind.profile)
    make_provider(world, kind)
    _unlink(world, kind)
    _event(world, "Revoked")
    assert (1, 1) == (world.sim.stats.revocation_calls, world.sim.stats.grants_revoked_by_request)
