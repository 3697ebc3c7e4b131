"""Every provider type against its simulator profile (issue 10, contract §1, §9.4-§9.6): the
operator, the real control plane and an HTTPS simulator speaking that provider's dialect.

Each type is set up the way its user guide section says (spec.type plus spec.baseURL,
or spec.issuerURL for generic), so that the default URLs and quirks are what is tested:
a due token is refreshed and rotated, the account name is read at validation, a dead
grant asks the user to sign in again (in the provider's own words: Gitea's
``unauthorized_client`` included), and a rejected client is the provider's fault.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kubernetes.client import ApiException

from providersim import Simulator
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.harness.waiting import wait_for
from tests.harness.world import G, V, World

DUE = 300  # seconds to expiry: inside the default refreshBefore (15m), so due at once
NOT_DUE = 3600
ENTRA_SCOPES = ["499b84ac-1321-427f-aa17-267ca6975798/.default", "offline_access"]


@dataclasses.dataclass(frozen=True)
class Type:
    """One provider type: how its simulator runs and how its ExternalAuthProvider reads."""

    profile: str
    spec: Callable[[Simulator], dict[str, Any]]
    account: str  # what status.account says for login "alice"
    scope: str = "repo"  # the grant's scope at the simulator
    sim: dict[str, Any] = dataclasses.field(default_factory=dict)


TYPES = {
    "github-enterprise": Type("github", lambda sim: {"type": "github", "baseURL": sim.url}, "alice"),
    "gitlab": Type("gitlab", lambda sim: {"type": "gitlab", "baseURL": sim.url}, "alice",
                   scope="read_user write_repository"),
    "gitea": Type("gitea", lambda sim: {"type": "gitea", "baseURL": sim.url}, "alice"),
    "bitbucket-cloud": Type("bitbucket-cloud", lambda sim: {"type": "bitbucket-cloud", "baseURL": sim.url},
                            "alice", scope="repository"),
    "azure-devops-entra": Type(
        "azure-devops-entra",
        lambda sim: {"type": "azure-devops-entra", "baseURL": sim.base_url, "scopes": ENTRA_SCOPES,
                     # Azure DevOps' profile API lives on another host in real life.
                     "validateURL": f"{sim.url}/_apis/profile/profiles/me?api-version=7.1"},
        "alice@users.providersim.test", scope=" ".join(ENTRA_SCOPES)),
    "generic-oidc": Type("generic", lambda sim: {"type": "generic", "issuerURL": sim.issuer_url}, "alice",
                         scope="openid profile email offline_access"),
}
PARAMS = [pytest.param(t, id=name) for name, t in TYPES.items()]


def make_provider(world: World, kind: Type, *, client_secret: str = CLIENT_SECRET, **extra: Any) -> str:
    """The ExternalAuthProvider as the user guide writes it for this type (no test-only URLs)."""
    name = world.provider
    world.core.create_namespaced_secret(world.ns, {
        "metadata": {"name": f"{name}-client"}, "stringData": {"clientSecret": client_secret}})
    spec = {"clientID": CLIENT_ID, "caBundle": world.sim.ca_pem, **kind.spec(world.sim), **extra,
            "clientSecretRef": {"namespace": world.ns, "name": f"{name}-client", "key": "clientSecret"}}
    world.co.create_cluster_custom_object(G, V, "externalauthproviders", {
        "apiVersion": f"{G}/{V}", "kind": "ExternalAuthProvider", "metadata": {"name": name}, "spec": spec})
    world._providers.append(name)
    return name


def token_secret(world: World, kind: Type, name: str, *, expires_in: float) -> dict[str, str]:
    grant = world.sim.issue_grant(CLIENT_ID, login="alice", scope=kind.scope)
    return world.make_token_secret(name, access=grant.access_token, refresh=grant.refresh_token,
                                   expires_in=expires_in)


def live(world: World, access_token: str) -> bool:
    r = requests.get(world.sim.validate_url, headers={"Authorization": f"Bearer {access_token}"},
                     verify=world.sim.ca_file, timeout=10)
    return r.status_code == 200


def provider_ready(world: World) -> dict[str, Any]:
    return wait_for(lambda: world.provider_condition(), timeout=15, message="the provider's Ready condition")


@pytest.mark.parametrize("kind", PARAMS)
def test_a_due_token_is_refreshed_and_rotated(make_world: Any, operator: Any, kind: Type) -> None:
    """The type's default token URL is used with its client authentication; the rotated
    refresh token lands in the Secret and the old one is sent exactly once."""
    world = make_world(profile=kind.profile, **kind.sim)
    make_provider(world, kind)
    old = token_secret(world, kind, "tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    wait_for(lambda: (world.link("link").get("status") or {}).get("lastRefreshTime"), timeout=30,
             message=lambda: f"a refresh; status {world.link('link').get('status')}")
    new = world.secret_data("tok")
    stats = world.sim.stats
    assert (True, True, 1, 0) == (new["refresh_token"] != old["refresh_token"], live(world, new["access_token"]),
                                  stats.exchanges_by_refresh_token.get(old["refresh_token"]), stats.reuse_attempts)
    world.wait_condition("link", "Ready", "True", "TokenCurrent")


def test_a_provider_that_does_not_rotate_keeps_the_refresh_token(make_world: Any, operator: Any) -> None:
    """A generic server that answers a refresh without a new refresh token: the one sent is
    kept in the Secret (RFC 6749 §6) and used again next time."""
    kind = TYPES["generic-oidc"]
    world = make_world(profile="generic", rotate_refresh_tokens=False)
    make_provider(world, kind)
    old = token_secret(world, kind, "tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    wait_for(lambda: world.secret_data("tok")["access_token"] != old["access_token"], timeout=30,
             message="a refresh")
    assert old["refresh_token"] == world.secret_data("tok")["refresh_token"]
    world.request_refresh("link", "again")
    world.wait_refreshed("link", "again")
    assert 2 == world.sim.stats.exchanges_by_refresh_token.get(old["refresh_token"])


@pytest.mark.parametrize("kind", PARAMS)
def test_validation_reads_the_account_name(make_world: Any, operator: Any, kind: Type) -> None:
    """The type's validation endpoint accepts the token and status.account says who it is,
    read from the field this provider uses."""
    world = make_world(profile=kind.profile, **kind.sim)
    userinfo = {"validateURL": world.sim.validate_url} if kind.profile == "generic" else {}
    make_provider(world, kind, **userinfo)
    token_secret(world, kind, "tok", expires_in=NOT_DUE)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Validated", "True", "Valid")
    assert (kind.account, 1) == (world.link("link")["status"].get("account"), world.sim.stats.validation_calls)


DEAD = [
    pytest.param(TYPES["github-enterprise"], "revoked", id="github-enterprise: 200 bad_refresh_token"),
    pytest.param(TYPES["gitlab"], "revoked", id="gitlab: 400 invalid_grant"),
    pytest.param(TYPES["gitea"], "spent", id="gitea: 400 unauthorized_client, token was already used"),
    pytest.param(TYPES["gitea"], "revoked", id="gitea: 400 invalid_grant, grant does not exist"),
    pytest.param(TYPES["bitbucket-cloud"], "revoked", id="bitbucket-cloud: 400 invalid_request Invalid refresh_token"),
    pytest.param(TYPES["azure-devops-entra"], "revoked", id="azure-devops-entra: invalid_grant AADSTS50173"),
    pytest.param(TYPES["generic-oidc"], "revoked", id="generic-oidc: 400 invalid_grant"),
]


@pytest.mark.parametrize(("kind", "how"), DEAD)
def test_a_dead_grant_asks_the_user_to_sign_in_again(make_world: Any, operator: Any, kind: Type, how: str) -> None:
    """The provider's own words for a dead refresh token make the link ReauthRequired, the
    token keys untouched, and the provider stays Ready (the client is fine)."""
    world = make_world(profile=kind.profile, keep_used_refresh_tokens=False, **kind.sim)
    make_provider(world, kind)
    grant = world.sim.issue_grant(CLIENT_ID, login="alice", scope=kind.scope)
    if how == "spent":  # someone exchanged it before (and threw the answer away)
        assert world.sim.provider.token(_refresh_request(world.sim, grant.refresh_token)).status == 200
    else:
        world.sim.revoke_grant(grant.refresh_token)
    world.make_token_secret("tok", access=grant.access_token, refresh=grant.refresh_token, expires_in=DUE)
    raw_before = dict(world.secret("tok").data)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Ready", "False", "ReauthRequired")
    world.wait_condition("link", "Refreshable", "False", "ReauthRequired")
    assert raw_before == {k: v for k, v in world.secret("tok").data.items() if k in raw_before}
    assert ("True", "Valid") == (provider_ready(world)["status"], provider_ready(world)["reason"])


@pytest.mark.parametrize("kind", PARAMS)
def test_a_rejected_client_is_the_providers_fault(make_world: Any, operator: Any, kind: Type) -> None:
    """A wrong client secret, in the provider's own words, marks the provider
    CredentialsRejected and the link ProviderCredentialsRejected; no token is touched."""
    world = make_world(profile=kind.profile, **kind.sim)
    make_provider(world, kind, client_secret="not-the-client-secret")
    token_secret(world, kind, "tok", expires_in=DUE)
    raw_before = dict(world.secret("tok").data)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Refreshable", "False", "ProviderCredentialsRejected")
    wait_for(lambda: (world.provider_condition() or {}).get("reason") == "CredentialsRejected", timeout=15,
             message="the provider CredentialsRejected")
    assert raw_before == {k: v for k, v in world.secret("tok").data.items() if k in raw_before}
    assert 0 == world.sim.stats.successful_refreshes


def test_an_issuer_without_a_discovery_document_makes_the_provider_invalid(make_world: Any, operator: Any) -> None:
    """spec.issuerURL naming a server without /.well-known/openid-configuration: the provider
    is Ready=False InvalidSpec, and no token is sent anywhere."""
    world = make_world(profile="github")
    make_provider(world, TYPES["generic-oidc"])
    token_secret(world, TYPES["generic-oidc"], "tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    condition = wait_for(lambda: (world.provider_condition() or {}).get("reason") == "InvalidSpec"
                         and world.provider_condition(), timeout=15, message="the provider InvalidSpec")
    world.wait_condition("link", "Ready", "False", "ProviderNotReady")
    assert ("False", 0) == (condition["status"], world.sim.stats.token_calls)


def test_a_failed_discovery_says_why_on_the_provider(make_world: Any, operator: Any) -> None:
    world = make_world(profile="github")
    make_provider(world, TYPES["generic-oidc"])
    condition = wait_for(lambda: (world.provider_condition() or {}).get("reason") == "InvalidSpec"
                         and world.provider_condition(), timeout=15, message="the provider InvalidSpec")
    assert "discovery document" in condition["message"]


def test_a_generic_issuer_validates_at_its_discovered_userinfo_endpoint(make_world: Any, operator: Any) -> None:
    kind = TYPES["generic-oidc"]
    world = make_world(profile="generic")
    make_provider(world, kind)
    token_secret(world, kind, "tok", expires_in=NOT_DUE)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Validated", "True", "Valid", timeout=15)


def _refresh_request(sim: Simulator, refresh_token: str) -> Any:
    """A refresh grant handed straight to the simulator's state (no HTTP, no counters)."""
    from providersim.provider import Request
    return Request(headers={}, params={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                       "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                       "scope": " ".join(ENTRA_SCOPES)}, path=sim.token_url.removeprefix(sim.url))


@pytest.mark.parametrize(("spec", "status"), [
    pytest.param({"type": "generic", "issuerURL": "https://sso.example/realms/dev"}, 201,
                 id="a generic provider with only an issuerURL is accepted"),
    pytest.param({"type": "gitlab", "issuerURL": "https://gitlab.example"}, 422,
                 id="an issuerURL on another type than generic is rejected"),
    pytest.param({"type": "generic", "issuerURL": "http://sso.example"}, 422,
                 id="a plain http issuerURL is rejected"),
])
def test_the_crd_checks_issuer_urls(custom_objects: Any, namespace: str, spec: dict[str, Any], status: int) -> None:
    """The CRD's schema and CEL rules for spec.issuerURL (one check, at the API server)."""
    name = f"issuer-{namespace}"[:63]
    body = {"apiVersion": f"{G}/{V}", "kind": "ExternalAuthProvider", "metadata": {"name": name},
            "spec": {"clientID": "c", **spec}}
    try:
        custom_objects.create_cluster_custom_object(G, V, "externalauthproviders", body)
        got = 201
        custom_objects.delete_cluster_custom_object(G, V, "externalauthproviders", name)
    except ApiException as e:
        got = e.status
    assert status == got
