"""Revocation endpoints in each profile's dialect (what the operator's revokeOnDelete
talks to): RFC 7009 for generic and gitlab, GitHub's grant API, none for the others."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.simulator.helpers import JSON, validate

PATHS = {"generic": "/oauth2/revoke", "gitlab": "/oauth/revoke"}


def _basic(user: str = CLIENT_ID, password: str = CLIENT_SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _rfc7009(sim: Any, token: str, hint: str | None = "refresh_token", **auth: str) -> requests.Response:
    data = {"token": token, **({"token_type_hint": hint} if hint else {})}
    return requests.post(sim.url + PATHS[str(sim.profile)], data=data, headers={**JSON, **_basic(**auth)},
                         verify=sim.ca_file, timeout=10)


def _github(sim: Any, access_token: str, *, client: str = CLIENT_ID, **auth: str) -> requests.Response:
    return requests.delete(f"{sim.url}/applications/{client}/grant", json={"access_token": access_token},
                           headers={**JSON, **_basic(**auth)}, verify=sim.ca_file, timeout=10)


@pytest.mark.parametrize("profile", ["generic", "gitlab"])
def test_rfc7009_revokes_the_whole_grant_by_its_refresh_token(make_simulator: Any, profile: str) -> None:
    sim = make_simulator(profile=profile)
    grant = sim.issue_grant(CLIENT_ID, scope="api")
    assert 200 == _rfc7009(sim, grant.refresh_token).status_code
    assert 401 == validate(sim, grant.access_token).status_code  # the access token died with it
    assert (1, 1) == (sim.stats.revocation_calls, sim.stats.grants_revoked_by_request)


@pytest.mark.parametrize("profile", ["generic", "gitlab"])
def test_rfc7009_answers_200_for_a_token_it_does_not_know(make_simulator: Any, profile: str) -> None:
    sim = make_simulator(profile=profile)
    assert 200 == _rfc7009(sim, "never-issued").status_code  # RFC 7009 §2.2
    assert 0 == sim.stats.grants_revoked_by_request


def test_rfc7009_refuses_a_wrong_client_secret_and_revokes_nothing(make_simulator: Any) -> None:
    sim = make_simulator(profile="generic")
    grant = sim.issue_grant(CLIENT_ID)
    assert 401 == _rfc7009(sim, grant.refresh_token, password="wrong").status_code
    assert 200 == validate(sim, grant.access_token).status_code


def test_rfc7009_refuses_an_unknown_token_type_hint(make_simulator: Any) -> None:
    sim = make_simulator(profile="generic")
    r = _rfc7009(sim, sim.issue_grant(CLIENT_ID).refresh_token, hint="id_token")
    assert (400, "unsupported_token_type") == (r.status_code, r.json()["error"])


def test_the_generic_discovery_document_names_its_revocation_endpoint(make_simulator: Any) -> None:
    sim = make_simulator(profile="generic")
    doc = requests.get(sim.url + "/.well-known/openid-configuration", verify=sim.ca_file, timeout=10).json()
    assert sim.url + "/oauth2/revoke" == doc["revocation_endpoint"]


def test_github_deletes_the_grant_with_the_apps_basic_auth(make_simulator: Any) -> None:
    sim = make_simulator(profile="github")
    grant = sim.issue_grant(CLIENT_ID)
    assert 204 == _github(sim, grant.access_token).status_code
    assert 401 == validate(sim, grant.access_token).status_code
    refreshed = requests.post(sim.token_url, data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token,
                                                   "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                              headers=JSON, verify=sim.ca_file, timeout=10).json()
    assert "bad_refresh_token" == refreshed["error"]  # the refresh token died with the grant
    assert 404 == _github(sim, grant.access_token).status_code  # gone now


def test_github_refuses_another_apps_client_id_in_the_path(make_simulator: Any) -> None:
    sim = make_simulator(profile="github")
    grant = sim.issue_grant(CLIENT_ID)
    sim.register_client("other", "other-secret")
    assert 404 == _github(sim, grant.access_token, client="other", user="other", password="other-secret").status_code
    assert 200 == validate(sim, grant.access_token).status_code


@pytest.mark.parametrize("profile", ["gitea", "bitbucket-cloud", "azure-devops-entra"])
def test_profiles_without_revocation_have_no_endpoint(make_simulator: Any, profile: str) -> None:
    sim = make_simulator(profile=profile)
    for path in ("/oauth2/revoke", "/oauth/revoke"):
        r = requests.post(sim.url + path, data={"token": "x"}, headers=JSON, verify=sim.ca_file, timeout=10)
        assert 404 == r.status_code
