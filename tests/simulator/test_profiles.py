"""The simulator's profiles: each speaks its provider's dialect (paths, error codes and
statuses, account answers, rate-limit headers), its clock can be set apart, and the
token endpoint can be rate-limited for a while. Real HTTPS via requests."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest
import requests

from providersim import Simulator
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.simulator.helpers import FakeClock

JSON = {"Accept": "application/json"}
PROFILES = ["github", "gitlab", "gitea", "bitbucket-cloud", "azure-devops-entra", "generic"]
ENTRA_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default offline_access"


def refresh(sim: Simulator, refresh_token: str, *, secret: str = CLIENT_SECRET, basic: bool = False,
            **fields: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **fields}
    if sim.profile.value == "azure-devops-entra":
        data.setdefault("scope", ENTRA_SCOPE)
    auth = None
    if basic:
        auth = (CLIENT_ID, secret)
    else:
        data.update(client_id=CLIENT_ID, client_secret=secret)
    return requests.post(sim.token_url, data=data, auth=auth, headers=JSON, verify=sim.ca_file, timeout=10)


def get(sim: Simulator, path: str, token: str) -> requests.Response:
    return requests.get(sim.url + path, headers={"Authorization": f"Bearer {token}", **JSON},
                        verify=sim.ca_file, timeout=10, allow_redirects=False)


def spent(sim: Simulator) -> str:
    """A refresh token that was already exchanged (rotated out)."""
    grant = sim.issue_grant(CLIENT_ID)
    assert 200 == refresh(sim, grant.refresh_token).status_code
    return grant.refresh_token


@pytest.mark.parametrize(("profile", "status", "error"), [
    pytest.param("github", 200, "bad_refresh_token", id="GitHub: 200 bad_refresh_token"),
    pytest.param("gitlab", 400, "invalid_grant", id="GitLab: 400 invalid_grant"),
    pytest.param("gitea", 400, "unauthorized_client", id="Gitea: 400 unauthorized_client, token was already used"),
    pytest.param("bitbucket-cloud", 400, "invalid_request", id="Bitbucket: 400 invalid_request, Invalid refresh_token"),
    pytest.param("generic", 400, "invalid_grant", id="generic: 400 invalid_grant"),
])
def test_a_spent_refresh_token_is_refused_in_each_dialect(make_simulator: Any, profile: str, status: int,
                                                          error: str) -> None:
    sim = make_simulator(profile=profile, keep_used_refresh_tokens=False)
    r = refresh(sim, spent(sim))
    assert (status, error) == (r.status_code, r.json()["error"])


def test_gitea_says_the_token_was_already_used() -> None:
    """The description the operator's gitea quirk is about (oauth2_provider.go)."""
    with Simulator(profile="gitea", keep_used_refresh_tokens=False) as sim:
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        r = refresh(sim, spent(sim))
        assert ("unauthorized_client", "token was already used") == (r.json()["error"],
                                                                       r.json()["error_description"])


@pytest.mark.parametrize(("profile", "keeps"), [
    pytest.param("azure-devops-entra", True, id="Entra: the old refresh token keeps working"),
    pytest.param("gitea", True, id="Gitea without INVALIDATE_REFRESH_TOKENS: the old one keeps working"),
    pytest.param("gitlab", False, id="GitLab: the old one dies"),
])
def test_rotation_by_default_per_profile(make_simulator: Any, profile: str, keeps: bool) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID)
    first = refresh(sim, grant.refresh_token).json()
    again = refresh(sim, grant.refresh_token)
    assert (True, keeps) == (first["refresh_token"] != grant.refresh_token, again.status_code == 200)


@pytest.mark.parametrize(("profile", "status", "error", "basic"), [
    pytest.param("github", 200, "incorrect_client_credentials", False, id="GitHub: 200 incorrect_client_credentials"),
    pytest.param("gitlab", 401, "invalid_client", False, id="GitLab: 401 invalid_client"),
    pytest.param("gitea", 400, "invalid_client", False, id="Gitea: 400 invalid_client"),
    pytest.param("bitbucket-cloud", 400, "unauthorized_client", True, id="Bitbucket: 400 unauthorized_client"),
    pytest.param("azure-devops-entra", 401, "invalid_client", False, id="Entra: 401 invalid_client"),
    pytest.param("generic", 401, "invalid_client", True, id="generic: 401 invalid_client"),
])
def test_a_wrong_client_secret_is_refused_in_each_dialect(make_simulator: Any, profile: str, status: int,
                                                          error: str, basic: bool) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID)
    r = refresh(sim, grant.refresh_token, secret="wrong", basic=basic)
    assert (status, error) == (r.status_code, r.json()["error"])


@pytest.mark.parametrize(("revoke", "code"), [
    pytest.param(True, 50173, id="a revoked grant is AADSTS50173"),
    pytest.param(False, 700082, id="an expired refresh token is AADSTS700082"),
])
def test_entra_dead_grants_carry_aadsts_codes(revoke: bool, code: int) -> None:
    clock = FakeClock()
    with Simulator(profile="azure-devops-entra", refresh_token_lifetime=60, clock=clock) as sim:
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        grant = sim.issue_grant(CLIENT_ID)
        if revoke:
            sim.revoke_grant(grant.access_token)
        else:
            clock.advance(61)
        body = refresh(sim, grant.refresh_token).json()
        assert ("invalid_grant", [code], f"AADSTS{code}:") == (
            body["error"], body["error_codes"], body["error_description"].split()[0])


def test_entra_wants_the_scope_on_every_refresh(make_simulator: Any) -> None:
    sim = make_simulator(profile="azure-devops-entra")
    grant = sim.issue_grant(CLIENT_ID)
    r = refresh(sim, grant.refresh_token, scope="")
    assert (400, "invalid_request", [900144]) == (r.status_code, r.json()["error"], r.json()["error_codes"])


def test_entra_answers_an_unknown_tenant_with_aadsts90002(make_simulator: Any) -> None:
    sim = make_simulator(profile="azure-devops-entra", tenant="contoso")
    grant = sim.issue_grant(CLIENT_ID)
    r = requests.post(sim.url + "/fabrikam/oauth2/v2.0/token", headers=JSON, verify=sim.ca_file, timeout=10,
                      data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token,
                            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scope": ENTRA_SCOPE})
    assert (400, [90002]) == (r.status_code, r.json()["error_codes"])


@pytest.mark.parametrize(("profile", "path", "field", "expected"), [
    pytest.param("github", "/user", "login", "ada", id="GitHub /user login"),
    pytest.param("github", "/api/v3/user", "login", "ada", id="GitHub Enterprise /api/v3/user login"),
    pytest.param("gitlab", "/api/v4/user", "username", "ada", id="GitLab /api/v4/user username"),
    pytest.param("gitlab", "/oauth/token/info", "resource_owner_id", 1000, id="GitLab /oauth/token/info"),
    pytest.param("gitea", "/api/v1/user", "login", "ada", id="Gitea /api/v1/user login"),
    pytest.param("gitea", "/login/oauth/userinfo", "preferred_username", "ada", id="Gitea userinfo"),
    pytest.param("bitbucket-cloud", "/2.0/user", "nickname", "ada", id="Bitbucket /2.0/user nickname"),
    pytest.param("azure-devops-entra", "/_apis/profile/profiles/me", "emailAddress", "ada@users.providersim.test",
                 id="Azure DevOps profile emailAddress"),
    pytest.param("azure-devops-entra", "/v1.0/me", "userPrincipalName", "ada@users.providersim.test",
                 id="Graph /me userPrincipalName"),
    pytest.param("generic", "/oauth2/userinfo", "preferred_username", "ada", id="generic userinfo"),
])
def test_each_profile_answers_the_account(make_simulator: Any, profile: str, path: str, field: str,
                                          expected: Any) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID, login="ada", scope="api")
    r = get(sim, path, grant.access_token)
    assert (200, expected) == (r.status_code, r.json()[field])


@pytest.mark.parametrize(("profile", "path", "status"), [
    pytest.param("github", "/user", 401, id="GitHub 401"),
    pytest.param("gitlab", "/api/v4/user", 401, id="GitLab 401"),
    pytest.param("gitea", "/api/v1/user", 401, id="Gitea 401"),
    pytest.param("bitbucket-cloud", "/2.0/user", 401, id="Bitbucket 401"),
    pytest.param("azure-devops-entra", "/_apis/profile/profiles/me", 203, id="Azure DevOps 203 sign-in page"),
    pytest.param("generic", "/oauth2/userinfo", 401, id="generic 401"),
])
def test_each_profile_refuses_an_expired_token_its_way(make_simulator: Any, profile: str, path: str,
                                                       status: int) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID)
    sim.expire_access_token(grant.access_token)
    assert status == get(sim, path, grant.access_token).status_code


def test_gitlab_answers_a_token_without_read_user_with_insufficient_scope(make_simulator: Any) -> None:
    sim = make_simulator(profile="gitlab")
    grant = sim.issue_grant(CLIENT_ID, scope="write_repository")
    r = get(sim, "/api/v4/user", grant.access_token)
    info = get(sim, "/oauth/token/info", grant.access_token)
    assert (403, "insufficient_scope", 200) == (r.status_code, r.json()["error"], info.status_code)


@pytest.mark.parametrize(("profile", "headers"), [
    pytest.param("github", {"x-ratelimit-remaining", "x-ratelimit-reset"}, id="GitHub x-ratelimit-*"),
    pytest.param("gitlab", {"ratelimit-remaining", "ratelimit-reset", "ratelimit-resettime"}, id="GitLab RateLimit-*"),
    pytest.param("generic", {"ratelimit-remaining", "ratelimit-reset"}, id="generic: the IETF draft's RateLimit-*"),
    pytest.param("gitea", set(), id="Gitea says nothing"),
    pytest.param("bitbucket-cloud", set(), id="Bitbucket says nothing to OAuth consumers"),
])
def test_each_profile_tells_its_budget_its_way(make_simulator: Any, profile: str, headers: set[str]) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID, scope="api")
    r = get(sim, sim.validate_url.removeprefix(sim.url), grant.access_token)
    names = {k for k, _ in r.headers.lower_items()}
    assert headers == names & {"x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit-remaining",
                               "ratelimit-reset", "ratelimit-resettime"}


@pytest.mark.parametrize(("profile", "status", "headers"), [
    pytest.param("gitlab", 429, {"ratelimit-remaining": "0"}, id="GitLab 429 with a Unix-time RateLimit-Reset"),
    pytest.param("generic", 429, {"ratelimit-remaining": "0"}, id="generic 429 with RateLimit-Reset in seconds"),
    pytest.param("bitbucket-cloud", 429, {}, id="Bitbucket 429 says nothing about when"),
    pytest.param("azure-devops-entra", 429, {"x-ratelimit-remaining": "0"}, id="Azure DevOps 429 with X-RateLimit-*"),
])
def test_a_spent_budget_is_answered_in_each_dialect(make_simulator: Any, profile: str, status: int,
                                                    headers: dict[str, str]) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID, scope="api")
    sim.set_rate_limit("primary", count=1)
    r = get(sim, sim.validate_url.removeprefix(sim.url), grant.access_token)
    got = {k: v for k, v in r.headers.lower_items() if k in headers}
    assert (status, headers) == (r.status_code, got)


def test_the_generic_profile_publishes_its_endpoints_by_discovery(make_simulator: Any) -> None:
    sim = make_simulator(profile="generic")
    doc = requests.get(sim.url + "/.well-known/openid-configuration", verify=sim.ca_file, timeout=10).json()
    assert (sim.url, sim.token_url, sim.validate_url, sim.device_authorization_url) == (
        doc["issuer"], doc["token_endpoint"], doc["userinfo_endpoint"], doc["device_authorization_endpoint"])


@pytest.mark.parametrize("offset", [600.0, -600.0])
def test_a_clock_offset_moves_the_date_header(make_simulator: Any, offset: float) -> None:
    sim = make_simulator(clock_offset=offset)
    grant = sim.issue_grant(CLIENT_ID)
    r = get(sim, "/user", grant.access_token)
    said = email.utils.parsedate_to_datetime(r.headers["Date"]).timestamp()
    assert abs(said - (time.time() + offset)) < 5


def test_a_token_endpoint_limited_for_a_while_announces_the_end_and_then_answers() -> None:
    clock = FakeClock()
    with Simulator(profile="github", clock=clock) as sim:
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        grant = sim.issue_grant(CLIENT_ID)
        sim.set_rate_limit("429", endpoint="token", duration=30)
        clock.advance(10)
        limited = refresh(sim, grant.refresh_token)
        clock.advance(20)
        after = refresh(sim, grant.refresh_token)
        calls = [(c.endpoint, c.status) for c in sim.calls("token")]
        assert (429, "20", 200, [("token", 429), ("token", 200)], 1) == (
            limited.status_code, limited.headers["retry-after"], after.status_code, calls,
            sim.stats.successful_refreshes)


def test_a_refresh_after_the_access_token_expired_is_counted_late() -> None:
    clock = FakeClock()
    with Simulator(profile="github", access_token_lifetime=60, clock=clock) as sim:
        sim.register_client(CLIENT_ID, CLIENT_SECRET)
        grant = sim.issue_grant(CLIENT_ID)
        clock.advance(30)
        on_time = refresh(sim, grant.refresh_token).json()
        clock.advance(61)
        refresh(sim, on_time["refresh_token"])
        assert 1 == sim.stats.late_refreshes
