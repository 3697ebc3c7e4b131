"""The operator's token exchange and validation client against the real HTTPS simulator
(no Kubernetes needed): every kind of provider answer is classified as contract §9 says."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_provider
from externalauth.oauth.exchanging import ProviderClient
from externalauth.policy.classifying import TokenVerdict, ValidationVerdict
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET

NOW = dt.datetime.now(dt.UTC)


def client_for(sim: Any, *, secret: str | None = CLIENT_SECRET, trust: bool = True, **spec: Any) -> ProviderClient:
    body = {"type": "github", "clientID": CLIENT_ID, "baseURL": sim.url, "validateURL": f"{sim.url}/user",
            **({"caBundle": sim.ca_pem} if trust else {}), **spec}
    return ProviderClient(parse_provider("p", body), SecretStr(secret) if secret else None,
                          connect_timeout=2, read_timeout=5)


def test_a_refresh_returns_rotated_tokens_with_expiry(make_simulator: Any) -> None:
    sim = make_simulator(access_token_lifetime=600, refresh_token_lifetime=86400)
    grant = sim.issue_grant(CLIENT_ID)
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert TokenVerdict.SUCCESS == result.classified.verdict
    assert result.tokens is not None and result.tokens.refresh_token is not None
    assert grant.refresh_token != result.tokens.refresh_token.reveal()
    assert result.tokens.expiry is not None and result.tokens.refresh_token_expiry is not None


def test_a_response_without_a_new_refresh_token_keeps_the_old_one(make_simulator: Any) -> None:
    sim = make_simulator(rotate_refresh_tokens=False)
    grant = sim.issue_grant(CLIENT_ID)
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    kept = result.tokens.refresh_token if result.tokens else None
    assert (TokenVerdict.SUCCESS, grant.refresh_token) == (result.classified.verdict, kept and kept.reveal())


def test_a_changed_scope_still_yields_the_token(make_simulator: Any) -> None:
    """oauthlib raises a 'Scope has changed' Warning carrying the token: it must be kept."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID, scope="repo")
    client = client_for(sim, type="azure-devops-entra", tokenURL=sim.token_url, scopes=["repo", "workflow"])
    result = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    assert TokenVerdict.SUCCESS == result.classified.verdict
    assert result.tokens is not None and "repo" == result.tokens.scope


@pytest.mark.parametrize(("mode", "setup", "verdict"), [
    pytest.param("github", "spent", TokenVerdict.DEAD_GRANT, id="GitHub 200 bad_refresh_token is a dead grant"),
    pytest.param("generic", "spent", TokenVerdict.DEAD_GRANT, id="generic 400 invalid_grant is a dead grant"),
    pytest.param("github", "bad-secret", TokenVerdict.CLIENT_REJECTED,
                 id="GitHub incorrect_client_credentials rejects the client"),
    pytest.param("generic", "bad-secret", TokenVerdict.CLIENT_REJECTED, id="generic 401 invalid_client"),
    pytest.param("github", "500", TokenVerdict.TRANSIENT, id="5xx is transient"),
    pytest.param("github", "drop", TokenVerdict.TRANSIENT, id="a dropped connection is transient"),
    pytest.param("github", "malformed", TokenVerdict.TRANSIENT, id="a malformed body is transient"),
    pytest.param("github", "untrusted", TokenVerdict.TRANSIENT, id="an unverifiable certificate is refused"),
])
def test_token_endpoint_answers_are_classified(make_simulator: Any, mode: str, setup: str,
                                               verdict: TokenVerdict) -> None:
    sim = make_simulator(mode=mode)
    grant = sim.issue_grant(CLIENT_ID)
    kwargs: dict[str, Any] = {"type": mode} if mode == "github" else {"type": "generic", "tokenURL": sim.token_url}
    if setup == "spent":
        client_for(sim, **kwargs).refresh(SecretStr(grant.refresh_token), now=NOW)
    elif setup in ("500", "drop", "malformed"):
        sim.add_fault("token", "status" if setup == "500" else setup, value=500 if setup == "500" else None)
    client = client_for(sim, secret="wrong" if setup == "bad-secret" else CLIENT_SECRET,
                        trust=setup != "untrusted", **kwargs)
    result = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    assert verdict == result.classified.verdict
    assert grant.refresh_token not in result.classified.message


@pytest.mark.parametrize(("limit", "verdict"), [
    pytest.param(None, ValidationVerdict.VALID, id="a live token is valid"),
    pytest.param("primary", ValidationVerdict.RATE_LIMITED, id="403 x-ratelimit-remaining 0"),
    pytest.param("secondary", ValidationVerdict.RATE_LIMITED, id="403 retry-after"),
    pytest.param("429", ValidationVerdict.RATE_LIMITED, id="429"),
])
def test_validation_answers_are_classified(make_simulator: Any, limit: str | None,
                                           verdict: ValidationVerdict) -> None:
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID, login="octo")
    if limit:
        sim.set_rate_limit(limit)
    outcome = client_for(sim).validate(SecretStr(grant.access_token), now=NOW)
    assert verdict == outcome.verdict
    if verdict is ValidationVerdict.VALID:
        assert "octo" == outcome.account
    else:
        assert outcome.retry_after is not None


def test_a_revoked_token_is_invalid(make_simulator: Any) -> None:
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.revoke_grant(grant.access_token)
    assert ValidationVerdict.INVALID == client_for(sim).validate(SecretStr(grant.access_token), now=NOW).verdict
