"""The simulator's browser sign-in: authorization endpoint, loopback redirects and PKCE at the
token endpoint, over real HTTPS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from providersim import Simulator
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.simulator.helpers import FakeClock, validate

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
REDIRECT = "http://127.0.0.1:53682/callback"


def authorize(sim: Simulator, *, method: str = "GET", **overrides: Any) -> requests.Response:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "state": "st4te",
              "code_challenge": CHALLENGE, "code_challenge_method": "S256", "scope": "repo", "login": "bob",
              **overrides}
    params = {k: v for k, v in params.items() if v is not None}
    if method == "POST":
        return requests.post(sim.authorize_url, data=params, verify=sim.ca_file, allow_redirects=False, timeout=10)
    return requests.get(sim.authorize_url, params=params, verify=sim.ca_file, allow_redirects=False, timeout=10)


def back(response: requests.Response) -> dict[str, str]:
    """The query of the redirect back to the loopback address (one value per field)."""
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def redeem(sim: Simulator, code: str, **overrides: Any) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": CLIENT_ID,
            "code_verifier": VERIFIER, **overrides}
    data = {k: v for k, v in data.items() if v is not None}
    return requests.post(sim.token_url, data=data, headers={"Accept": "application/json"}, verify=sim.ca_file,
                         timeout=10)


def test_a_signed_in_user_goes_back_to_the_loopback_redirect_with_a_code_and_the_state(simulator: Simulator) -> None:
    r = authorize(simulator)
    fields = back(r)
    assert (302, {"code", "state"}, "st4te") == (r.status_code, set(fields), fields["state"])


def test_the_code_and_the_verifier_buy_a_token_of_the_user_who_signed_in(make_simulator: Any) -> None:
    """Generic (OIDC) dialect: 200 with access and refresh tokens; the access token validates as bob."""
    sim = make_simulator(mode="generic")
    code = back(authorize(sim))["code"]
    r = redeem(sim, code)
    body = r.json()
    assert (200, True, "bob") == (r.status_code, bool(body.get("refresh_token")),
                                  validate(sim, body["access_token"]).json()["preferred_username"])
    assert (1, 1, (REDIRECT,)) == (sim.authorizer.stats.codes_issued, sim.authorizer.stats.codes_redeemed,
                                   sim.authorizer.stats.redirect_uris)


def test_the_consent_form_posted_back_signs_the_user_in(simulator: Simulator) -> None:
    """Without a login the page is a form; POSTing it with one is consent."""
    page = authorize(simulator, login=None)
    posted = authorize(simulator, method="POST", login="carol")
    assert (200, True) == (page.status_code, b'<form method="post"' in page.content)
    assert "st4te" == back(posted)["state"]


@pytest.mark.parametrize(("overrides", "status", "error"), [
    pytest.param({"client_id": "nobody"}, 404, None, id="an unknown client gets a page, not a redirect"),
    pytest.param({"redirect_uri": "https://evil.example/callback"}, 400, None,
                 id="a redirect that is not loopback is never followed"),
    pytest.param({"redirect_uri": "http://localhost:53682/callback"}, 400, None,
                 id="localhost is not a loopback literal"),
    pytest.param({"redirect_uri": "http://127.0.0.1/callback"}, 400, None, id="a loopback redirect needs a port"),
    pytest.param({"code_challenge": None}, 302, "invalid_request", id="no PKCE challenge is refused"),
    pytest.param({"code_challenge_method": "plain"}, 302, "invalid_request", id="the plain method is refused"),
    pytest.param({"response_type": "token"}, 302, "unsupported_response_type", id="only the code flow is offered"),
    pytest.param({"deny": "1"}, 302, "access_denied", id="a user who denies goes back with access_denied"),
])
def test_the_authorize_endpoint_refuses(simulator: Simulator, overrides: dict[str, Any], status: int,
                                        error: str | None) -> None:
    r = authorize(simulator, **overrides)
    got_error = back(r).get("error") if r.status_code == 302 else None
    assert (status, error, 0) == (r.status_code, got_error, simulator.authorizer.stats.codes_issued)


Mistake = Callable[[Simulator, str], requests.Response]


@pytest.mark.parametrize(("mistake", "error"), [
    pytest.param(lambda s, c: redeem(s, c, code_verifier="x" * 43), "invalid_grant", id="a wrong verifier"),
    pytest.param(lambda s, c: redeem(s, c, code_verifier=None), "invalid_grant", id="no verifier"),
    pytest.param(lambda s, c: redeem(s, c, redirect_uri="http://127.0.0.1:1/callback"), "invalid_grant",
                 id="another redirect_uri"),
    pytest.param(lambda s, c: redeem(s, c + "x"), "invalid_grant", id="an unknown code"),
    pytest.param(lambda s, c: (redeem(s, c), redeem(s, c))[1], "invalid_grant", id="a code used twice"),
    pytest.param(lambda s, c: redeem(s, c, client_secret="wrong"), "invalid_client",
                 id="a wrong client secret, when one is sent"),
])
def test_the_token_endpoint_refuses_a_code_exchange_with(make_simulator: Any, mistake: Mistake, error: str) -> None:
    """Generic dialect: HTTP 400 (401 for the client) with the RFC error code."""
    sim = make_simulator(mode="generic")
    r = mistake(sim, back(authorize(sim))["code"])
    assert (401 if error == "invalid_client" else 400, error) == (r.status_code, r.json()["error"])


def test_a_wrong_verifier_burns_the_code(make_simulator: Any) -> None:
    """After a failed PKCE check, even the right verifier gets nothing (no guessing)."""
    sim = make_simulator(mode="generic")
    code = back(authorize(sim))["code"]
    redeem(sim, code, code_verifier="y" * 43)
    r = redeem(sim, code)
    assert (400, 1) == (r.status_code, sim.authorizer.stats.pkce_failures)


def test_the_github_dialect_answers_a_bad_code_with_http_200(simulator: Simulator) -> None:
    code = back(authorize(simulator))["code"]
    redeem(simulator, code)
    r = redeem(simulator, code)
    assert (200, "bad_verification_code", 1) == (r.status_code, r.json()["error"],
                                                 simulator.authorizer.stats.code_reuse_attempts)


def test_a_confidential_client_may_still_send_its_secret(simulator: Simulator) -> None:
    code = back(authorize(simulator))["code"]
    r = redeem(simulator, code, client_secret=CLIENT_SECRET)
    assert (200, True, 1) == (r.status_code, "access_token" in r.json(),
                              simulator.authorizer.stats.exchanges_with_client_secret)


def test_a_code_expires_after_ten_minutes(make_simulator: Any) -> None:
    clock = FakeClock()
    sim = make_simulator(mode="generic", clock=clock)
    code = back(authorize(sim))["code"]
    clock.advance(601)
    assert "invalid_grant" == redeem(sim, code).json()["error"]
