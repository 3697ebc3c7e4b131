"""The token endpoint: rotation, single use, replay detection, client auth, error styles."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.simulator.helpers import JSON, refresh, validate


def test_refresh_returns_a_new_refresh_token_each_time(simulator):
    """Each exchange rotates: a fresh access and refresh token, never the old ones."""
    grant = simulator.issue_grant(CLIENT_ID)
    first = refresh(simulator, grant.refresh_token).json()
    second = refresh(simulator, first["refresh_token"]).json()
    seen = {grant.refresh_token, first["refresh_token"], second["refresh_token"]}
    assert 3 == len(seen)
    assert {"access_token", "token_type", "expires_in", "refresh_token", "scope"} == set(second)
    assert ("bearer", 120, "repo") == (second["token_type"], second["expires_in"], second["scope"])


def test_spent_refresh_token_gets_200_bad_refresh_token(simulator):
    """GitHub answers a reused refresh token with HTTP 200 and error bad_refresh_token."""
    grant = simulator.issue_grant(CLIENT_ID)
    assert 200 == refresh(simulator, grant.refresh_token).status_code
    again = refresh(simulator, grant.refresh_token)
    assert (200, "bad_refresh_token") == (again.status_code, again.json()["error"])


def test_unknown_refresh_token_gets_bad_refresh_token(simulator):
    """A refresh token the provider never issued is a dead grant too."""
    r = refresh(simulator, "ghr_not-a-real-token")
    assert (200, "bad_refresh_token") == (r.status_code, r.json()["error"])


def test_rotation_revokes_the_previous_access_token(simulator):
    """After a refresh the old access token no longer validates; the new one does."""
    grant = simulator.issue_grant(CLIENT_ID)
    new = refresh(simulator, grant.refresh_token).json()
    statuses = (
        validate(simulator, grant.access_token).status_code,
        validate(simulator, new["access_token"]).status_code,
    )
    assert (401, 200) == statuses


def test_replay_detection_revokes_the_whole_grant(make_simulator):
    """Presenting a spent refresh token kills the grant: the newest tokens die too."""
    sim = make_simulator(replay_detection=True)
    grant = sim.issue_grant(CLIENT_ID)
    new = refresh(sim, grant.refresh_token).json()
    replay = refresh(sim, grant.refresh_token)
    after = refresh(sim, new["refresh_token"])
    assert "bad_refresh_token" == replay.json()["error"]
    assert 401 == validate(sim, new["access_token"]).status_code
    assert "bad_refresh_token" == after.json()["error"]
    assert (1, 1) == (sim.stats.revoked_grants, sim.stats.reuse_attempts)


def test_without_replay_detection_a_reuse_leaves_the_grant_alive(simulator):
    """Without replay detection only the spent token is refused."""
    grant = simulator.issue_grant(CLIENT_ID)
    new = refresh(simulator, grant.refresh_token).json()
    refresh(simulator, grant.refresh_token)
    assert 200 == validate(simulator, new["access_token"]).status_code
    assert 0 == simulator.stats.revoked_grants


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(
            "github",
            (200, "incorrect_client_credentials", None),
            id="github answers a wrong client secret with 200 incorrect_client_credentials",
        ),
        pytest.param(
            "generic",
            (401, "invalid_client", 'Basic realm="providersim"'),
            id="generic answers a wrong client secret with 401 invalid_client",
        ),
    ],
)
def test_wrong_client_secret(make_simulator, mode, expected):
    sim = make_simulator(mode=mode)
    grant = sim.issue_grant(CLIENT_ID)
    r = refresh(sim, grant.refresh_token, client_secret="wrong")
    assert expected == (r.status_code, r.json()["error"], r.headers.get("www-authenticate"))


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"client_id": "nobody"}, id="an unknown client id is rejected"),
        pytest.param(
            {"client_secret": None}, id="a confidential client without secret is rejected"
        ),
    ],
)
def test_bad_client_credentials_github(simulator, fields):
    grant = simulator.issue_grant(CLIENT_ID)
    r = refresh(simulator, grant.refresh_token, **fields)
    assert "incorrect_client_credentials" == r.json()["error"]


def test_rotated_client_secret_takes_effect(simulator):
    """set_client_secret makes the old secret fail and the new one work."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.set_client_secret(CLIENT_ID, "new-secret")
    old = refresh(simulator, grant.refresh_token)
    new = refresh(simulator, grant.refresh_token, client_secret="new-secret")
    assert ("incorrect_client_credentials", 200) == (old.json()["error"], new.status_code)
    assert "access_token" in new.json()


def test_generic_mode_answers_a_dead_refresh_token_with_400_invalid_grant(make_simulator):
    """RFC 6749 5.2: a spent refresh token is 400 invalid_grant."""
    sim = make_simulator(mode="generic")
    grant = sim.issue_grant(CLIENT_ID)
    refresh(sim, grant.refresh_token)
    r = refresh(sim, grant.refresh_token)
    assert (400, "invalid_grant") == (r.status_code, r.json()["error"])


def test_no_rotation_mode_omits_refresh_token_and_keeps_the_old_one_usable(make_simulator):
    """Without rotation the response has no refresh_token and the old one keeps working."""
    sim = make_simulator(rotate_refresh_tokens=False)
    grant = sim.issue_grant(CLIENT_ID)
    first = refresh(sim, grant.refresh_token)
    second = refresh(sim, grant.refresh_token)
    assert "refresh_token" not in first.json()
    assert "access_token" in second.json()
    assert {grant.refresh_token: 2} == sim.stats.exchanges_by_refresh_token


def test_refresh_token_expires_in_is_sent_when_configured(make_simulator):
    """GitHub-style refresh_token_expires_in appears only when a lifetime is set."""
    sim = make_simulator(refresh_token_lifetime=3600)
    grant = sim.issue_grant(CLIENT_ID)
    assert 3600 == refresh(sim, grant.refresh_token).json()["refresh_token_expires_in"]


def test_expired_refresh_token_is_a_dead_grant(make_simulator):
    """A refresh token past its lifetime is refused like a spent one."""
    sim = make_simulator(refresh_token_lifetime=0)
    grant = sim.issue_grant(CLIENT_ID)
    assert "bad_refresh_token" == refresh(sim, grant.refresh_token).json()["error"]


def test_revoked_grant_refuses_its_refresh_token(simulator):
    """revoke_grant (by access token) kills the refresh token as well."""
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.revoke_grant(grant.access_token)
    assert "bad_refresh_token" == refresh(simulator, grant.refresh_token).json()["error"]


def test_http_basic_client_authentication_is_accepted(simulator):
    """Client credentials may come in an Authorization: Basic header instead of the body."""
    grant = simulator.issue_grant(CLIENT_ID)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    r = refresh(
        simulator,
        grant.refresh_token,
        client_id=None,
        client_secret=None,
        headers={**JSON, "Authorization": f"Basic {basic}"},
    )
    assert "access_token" in r.json()


def test_json_request_body_is_accepted(simulator):
    """The token endpoint also reads a JSON body."""
    grant = simulator.issue_grant(CLIENT_ID)
    r = requests.post(
        simulator.token_url,
        json={
            "grant_type": "refresh_token",
            "refresh_token": grant.refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        headers=JSON,
        verify=simulator.ca_file,
        timeout=10,
    )
    assert "access_token" in r.json()


def test_github_mode_answers_form_encoded_without_accept_json(simulator):
    """Like GitHub, the default answer is application/x-www-form-urlencoded."""
    grant = simulator.issue_grant(CLIENT_ID)
    r = refresh(simulator, grant.refresh_token, headers={"Accept": "*/*"})
    assert "application/x-www-form-urlencoded" == r.headers["content-type"].split(";")[0]
    assert r.text.startswith("access_token=ghu_")


def test_a_different_requested_scope_is_answered_with_the_granted_scope(simulator):
    """Asking for another scope on refresh returns the scope of the grant."""
    grant = simulator.issue_grant(CLIENT_ID, scope="repo")
    r = refresh(simulator, grant.refresh_token, scope="repo admin:org")
    assert "repo" == r.json()["scope"]


def test_an_unsupported_grant_type_is_refused(make_simulator):
    """Generic mode answers an unknown grant_type with 400 unsupported_grant_type."""
    sim = make_simulator(mode="generic")
    r = refresh(sim, "x", grant_type="password")
    assert (400, "unsupported_grant_type") == (r.status_code, r.json()["error"])


def test_a_public_client_refreshes_without_a_secret(simulator):
    """A client registered without a secret authenticates by client_id alone."""
    simulator.register_client("public-app")
    grant = simulator.issue_grant("public-app")
    r = refresh(simulator, grant.refresh_token, client_id="public-app", client_secret=None)
    assert "access_token" in r.json()
