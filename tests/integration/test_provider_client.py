"""The operator's token exchange and validation client against the real HTTPS simulator
(no Kubernetes needed): every kind of provider answer is classified as contract §9 says."""

from __future__ import annotations

import datetime as dt
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from externalauth.errors import DiscoveryError
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_provider
from externalauth.model.tokens import MAX_LIFETIME
from externalauth.oauth.exchanging import ProviderClient
from externalauth.policy.classifying import TokenVerdict, ValidationVerdict
from tests.harness.proxy import ConnectProxy
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.harness.waiting import wait_for

NOW = dt.datetime.now(dt.UTC)
CANARY = "CANARY-7f3a"  # planted in hostile answers; must never reach a log line or a message


def client_for(sim: Any, *, secret: str | None = CLIENT_SECRET, trust: bool = True, **spec: Any) -> ProviderClient:
    kwargs = {k: spec.pop(k) for k in ("deadline", "read_timeout") if k in spec}
    body = {"type": "github", "clientID": CLIENT_ID, "baseURL": sim.url, "validateURL": f"{sim.url}/user",
            **({"caBundle": sim.ca_pem} if trust else {}), **spec}
    return ProviderClient(parse_provider("p", body), SecretStr(secret) if secret else None,
                          connect_timeout=2, **{"read_timeout": 5, **kwargs})


@pytest.fixture
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, captured: the secret canary reads it after the test."""
    with caplog.at_level(logging.DEBUG):
        for name in ("urllib3", "requests_oauthlib", "oauthlib", "externalauth"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield caplog
    for name in ("urllib3", "requests_oauthlib", "oauthlib"):
        logging.getLogger(name).setLevel(logging.WARNING)


def assert_no_secret(text: str, *secrets: str) -> None:
    leaked = [s for s in (CANARY, CLIENT_SECRET, *secrets) if s and s in text]
    assert [] == leaked


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
    pytest.param("github", "malformed", TokenVerdict.UNUSABLE_ANSWER,
                 id="a malformed 200 body is unusable (the refresh token may be spent)"),
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


# --- redirects (contract §9.10) ------------------------------------------------------------------
def redirecting_pair(make_simulator: Any, tmp_path: Path, *, endpoint: str, status: int,
                     **kwargs: Any) -> tuple[Any, Any]:
    """A provider whose ``endpoint`` redirects to a second origin that shares its CA (so a client
    that followed would get through TLS) and answers any token request with an attacker's token."""
    first = make_simulator(state_dir=tmp_path, **kwargs)
    second = make_simulator(state_dir=tmp_path, **kwargs)
    second.add_fault("token", "body", value={"access_token": f"gho_ATTACKER{CANARY}", "token_type": "bearer"})
    target = {"token": second.token_url, "device_token": second.token_url, "validate": second.validate_url,
              "device_code": second.device_authorization_url}[endpoint]
    first.add_fault(endpoint, "redirect", value=status, headers={"location": target})
    return first, second


@pytest.mark.parametrize(("mode", "status"), [
    pytest.param("github", 307, id="GitHub type (secret in the body) and a 307"),
    pytest.param("github", 308, id="GitHub type (secret in the body) and a 308"),
    pytest.param("generic", 307, id="generic type (HTTP Basic) and a 307"),
])
def test_a_token_endpoint_redirect_is_never_followed(make_simulator: Any, tmp_path: Path, every_log_line: Any,
                                                    mode: str, status: int) -> None:
    """Nothing reaches the second origin, its answer is not accepted, and the refresh token (which
    no one we trust consumed) still works afterwards."""
    first, second = redirecting_pair(make_simulator, tmp_path, endpoint="token", status=status, mode=mode)
    grant = first.issue_grant(CLIENT_ID)
    kwargs: dict[str, Any] = {"type": mode} if mode == "github" else {"type": "generic", "tokenURL": first.token_url}
    result = client_for(first, **kwargs).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert (0, TokenVerdict.TRANSIENT, None) == (
        second.stats.requests_received, result.classified.verdict, result.tokens)
    assert f"HTTP {status}, a redirect" in result.classified.message
    assert_no_secret(every_log_line.text + result.classified.message, grant.refresh_token)
    first.clear_faults()
    again = client_for(first, **kwargs).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert TokenVerdict.SUCCESS == again.classified.verdict


def test_a_validation_redirect_is_never_followed(make_simulator: Any, tmp_path: Path, every_log_line: Any) -> None:
    first, second = redirecting_pair(make_simulator, tmp_path, endpoint="validate", status=307)
    grant = first.issue_grant(CLIENT_ID)
    outcome = client_for(first).validate(SecretStr(grant.access_token), now=NOW)
    assert (0, ValidationVerdict.UNREACHABLE) == (second.stats.requests_received, outcome.verdict)
    assert_no_secret(every_log_line.text + outcome.message, grant.access_token)


@pytest.mark.parametrize(("endpoint", "status"), [
    pytest.param("device_code", 307, id="the device authorization endpoint redirects with 307"),
    pytest.param("device_code", 308, id="the device authorization endpoint redirects with 308"),
    pytest.param("device_token", 307, id="the token endpoint redirects a poll"),
])
def test_a_device_flow_redirect_is_never_followed(make_simulator: Any, tmp_path: Path, every_log_line: Any,
                                                  endpoint: str, status: int) -> None:
    """``externalauth login`` stops with a clear error; the client secret never reaches the second origin."""
    from externalauth.errors import PermanentError
    from externalauth.oauth.device import DeviceFlow

    first, second = redirecting_pair(make_simulator, tmp_path, endpoint=endpoint, status=status)
    spec = parse_provider("p", {"type": "github", "clientID": CLIENT_ID, "baseURL": first.url,
                                "caBundle": first.ca_pem})
    flow = DeviceFlow(spec, client_secret=SecretStr(CLIENT_SECRET), sleep=lambda s: None)
    with pytest.raises(PermanentError, match="redirect") as e:
        flow.wait(flow.start())
    assert 0 == second.stats.requests_received
    assert_no_secret(every_log_line.text + str(e.value))


# --- bounded bodies and deadlines (contract §9.14) -----------------------------------------------
def test_a_200_mib_validation_answer_is_not_read_whole(make_simulator: Any) -> None:
    """Only the first MiB is read: the token is valid (HTTP 200), the account unknown, and the
    client's memory stays small."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("validate", "huge", value=200 * 1024 * 1024)
    client = client_for(sim)
    tracemalloc.start()
    try:
        outcome = client.validate(SecretStr(grant.access_token), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (ValidationVerdict.VALID, None) == (outcome.verdict, outcome.account)
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


def test_a_huge_token_answer_is_unusable_not_read_whole(make_simulator: Any) -> None:
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "huge", value=50 * 1024 * 1024)
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert (TokenVerdict.UNUSABLE_ANSWER, None) == (result.classified.verdict, result.tokens)


@pytest.mark.parametrize(("endpoint", "kind", "value", "expected"), [
    pytest.param("token", "trickle", 0.1, TokenVerdict.UNUSABLE_ANSWER,
                 id="a token answer trickled one byte every 0.1 s is cut (its 200 says the token may be spent)"),
    pytest.param("validate", "trickle", 0.1, ValidationVerdict.UNREACHABLE,
                 id="a validation answer trickled one byte every 0.1 s is cut"),
    pytest.param("token", "latency", 10, TokenVerdict.TRANSIENT,
                 id="a token answer 10 s late (read timeout 20 s) is cut"),
    pytest.param("validate", "latency", 10, ValidationVerdict.UNREACHABLE,
                 id="a validation answer 10 s late (read timeout 20 s) is cut"),
])
def test_every_provider_call_has_an_overall_deadline(make_simulator: Any, every_log_line: Any, endpoint: str,
                                                     kind: str, value: float, expected: Any) -> None:
    """Per-read timeouts never fire on a trickle (each byte comes in time); the 2 s deadline does."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault(endpoint, kind, value=value)
    client = client_for(sim, deadline=2.0, read_timeout=20)
    started = time.monotonic()
    if endpoint == "token":
        verdict: Any = client.refresh(SecretStr(grant.refresh_token), now=NOW).classified.verdict
    else:
        verdict = client.validate(SecretStr(grant.access_token), now=NOW).verdict
    elapsed = time.monotonic() - started
    assert expected == verdict
    assert elapsed < 3.5, f"took {elapsed:.1f}s"
    assert_no_secret(every_log_line.text, grant.refresh_token, grant.access_token)


def test_a_trickled_device_flow_answer_is_cut_at_the_deadline(make_simulator: Any) -> None:
    from externalauth.errors import TransientError
    from externalauth.oauth.device import DeviceFlow

    sim = make_simulator()
    sim.add_fault("device_code", "trickle", value=0.1)
    spec = parse_provider("p", {"type": "github", "clientID": CLIENT_ID, "baseURL": sim.url,
                                "caBundle": sim.ca_pem})
    started = time.monotonic()
    with pytest.raises(TransientError):
        DeviceFlow(spec, timeout=2.0).start()
    assert time.monotonic() - started < 3.5


# --- hostile token answers (contract §9.13) ------------------------------------------------------
BASE = {"access_token": f"gho_new{CANARY}", "refresh_token": f"ghr_new{CANARY}", "token_type": "bearer"}
YEAR = MAX_LIFETIME


@pytest.mark.parametrize(("body", "verdict", "lifetimes"), [
    pytest.param({**BASE, "expires_in": 1e308}, TokenVerdict.SUCCESS, (YEAR, None),
                 id="expires_in 1e308 is capped at a year"),
    pytest.param({**BASE, "expires_in": 3600, "refresh_token_expires_in": 1e20}, TokenVerdict.SUCCESS,
                 (dt.timedelta(hours=1), YEAR), id="refresh_token_expires_in 1e20 is capped at a year"),
    pytest.param({**BASE, "expires_in": "3600.5"}, TokenVerdict.SUCCESS, (dt.timedelta(seconds=3600.5), None),
                 id="expires_in 3600.5 as a string is read"),
    pytest.param({**BASE, "expires_in": -60}, TokenVerdict.SUCCESS, (None, None),
                 id="a negative expires_in leaves the expiry unknown"),
    pytest.param({**BASE, "expires_in": float("nan")}, TokenVerdict.SUCCESS, (None, None),
                 id="expires_in NaN leaves the expiry unknown"),
    pytest.param({**BASE, "expires_in": float("inf")}, TokenVerdict.SUCCESS, (None, None),
                 id="expires_in Infinity leaves the expiry unknown"),
    pytest.param({**BASE, "access_token": f"gho_{CANARY}\nmachine x login y password z"}, TokenVerdict.SUCCESS,
                 (None, None), id="an access token with a newline is kept (formats refuse it)"),
    pytest.param([BASE], TokenVerdict.UNUSABLE_ANSWER, None, id="a JSON list body is unusable"),
    pytest.param({**BASE, "access_token": {"a": CANARY}}, TokenVerdict.UNUSABLE_ANSWER, None,
                 id="an access_token that is an object is unusable"),
    pytest.param({**BASE, "access_token": 12345}, TokenVerdict.UNUSABLE_ANSWER, None,
                 id="an access_token that is a number is unusable"),
    pytest.param({"token_type": "bearer"}, TokenVerdict.UNUSABLE_ANSWER, None,
                 id="a 200 without an access token is unusable"),
    pytest.param(None, TokenVerdict.UNUSABLE_ANSWER, None, id="a JSON null body is unusable"),
    pytest.param({"error": {"code": CANARY}}, TokenVerdict.PERMANENT, None,
                 id="an error that is not a string is a permanent unknown error"),
])
def test_hostile_token_answers_never_raise(make_simulator: Any, every_log_line: Any, body: Any,
                                          verdict: TokenVerdict,
                                          lifetimes: tuple[dt.timedelta | None, dt.timedelta | None] | None) -> None:
    """Odd answers that carry tokens are kept with what can be trusted; answers that cannot be used
    are UNUSABLE_ANSWER (not retried blindly); nothing raises, no token value is logged."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "body", value=body)
    started = time.monotonic()
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    took = dt.timedelta(seconds=time.monotonic() - started)
    tokens = result.tokens
    # Lifetimes count from the answer's arrival: NOW plus at most the call's duration.
    got = None if tokens is None else tuple(
        None if moment is None else want if want is not None and want <= moment - NOW <= want + took
        else moment - NOW
        for moment, want in zip((tokens.expiry, tokens.refresh_token_expiry), lifetimes or (None, None), strict=True))
    assert (verdict, lifetimes) == (result.classified.verdict, got)
    assert_no_secret(every_log_line.text + result.classified.message + repr(result), grant.refresh_token)


def test_an_unusable_answer_hands_back_a_new_refresh_token(make_simulator: Any) -> None:
    """The old refresh token may be spent: a usable new one in an otherwise unusable answer is kept."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "body", value={**BASE, "access_token": {"a": 1}})
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert (TokenVerdict.UNUSABLE_ANSWER, BASE["refresh_token"]) == (
        result.classified.verdict, result.refresh_token and result.refresh_token.reveal())


def test_a_token_that_cannot_be_a_header_never_reaches_a_message(make_simulator: Any, every_log_line: Any) -> None:
    """http.client refuses a header value with a newline and puts the value in its exception message:
    the validation is Unreachable, and neither the log nor the outcome carries the token."""
    sim = make_simulator()
    token = f"gho_{CANARY}\r\nX-Injected: 1"
    outcome = client_for(sim).validate(SecretStr(token), now=NOW)
    assert (ValidationVerdict.UNREACHABLE, 0) == (outcome.verdict, sim.stats.validation_calls)
    assert_no_secret(every_log_line.text + outcome.message + repr(outcome))


# --- expiry truth, rate-limit etiquette, discovery (issue 10) ---------------------------
def test_the_expiry_counts_from_when_the_answer_arrived(make_simulator: Any) -> None:
    """A token endpoint that takes 2 s to answer: the 600 s lifetime starts when its answer
    arrived, not when the request left (the wait did not eat into the lifetime)."""
    sim = make_simulator(access_token_lifetime=600)
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "latency", value=2.0, count=1)
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert result.tokens is not None and result.tokens.expiry is not None
    lifetime = (result.tokens.expiry - NOW).total_seconds()
    assert 602 <= lifetime < 610


@pytest.mark.parametrize("offset", [600.0, -600.0])
def test_the_clock_skew_is_measured_and_the_expiry_stays_on_our_clock(make_simulator: Any, offset: float) -> None:
    sim = make_simulator(access_token_lifetime=600, clock_offset=offset)
    grant = sim.issue_grant(CLIENT_ID)
    now = dt.datetime.now(dt.UTC)
    result = client_for(sim).refresh(SecretStr(grant.refresh_token), now=now)
    assert result.tokens is not None and result.tokens.expiry is not None and result.clock_skew is not None
    assert (True, True) == (abs(result.clock_skew - offset) < 3,
                            600 <= (result.tokens.expiry - now).total_seconds() < 605)


def test_a_rate_limited_token_endpoint_gets_nothing_until_its_retry_after(make_simulator: Any) -> None:
    """A 429 with Retry-After: 60 holds the endpoint for every refresh token of the provider."""
    sim = make_simulator()
    first, second = sim.issue_grant(CLIENT_ID), sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "status", value=429, count=1, headers={"retry-after": "60"})
    client = client_for(sim)
    limited = client.refresh(SecretStr(first.refresh_token), now=NOW)
    held = client.refresh(SecretStr(second.refresh_token), now=NOW)
    wait = held.classified.retry_after
    assert (TokenVerdict.TRANSIENT, TokenVerdict.TRANSIENT, 1, True) == (
        limited.classified.verdict, held.classified.verdict, sim.stats.token_calls,
        wait is not None and 55 < wait <= 60)


def test_an_hour_long_retry_after_holds_the_endpoint_for_other_links_5_minutes_only(make_simulator: Any) -> None:
    """Contract §9.16: one 429 with Retry-After: 3600 makes the link that got it wait the
    hour, but the endpoint is held for every other tenant's links for at most
    MAX_ENDPOINT_HOLD (5 minutes) before one of them probes again."""
    sim = make_simulator()
    first, second = sim.issue_grant(CLIENT_ID), sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "status", value=429, count=1, headers={"retry-after": "3600"})
    client = client_for(sim)
    limited = client.refresh(SecretStr(first.refresh_token), now=NOW)
    held = client.refresh(SecretStr(second.refresh_token), now=NOW)
    mine, others = limited.classified.retry_after, held.classified.retry_after
    assert mine is not None and mine >= 3599, mine
    assert others is not None and 290 < others <= 300, others
    assert 1 == sim.stats.token_calls


def test_a_spent_budget_holds_the_next_validation_until_the_reset(make_simulator: Any) -> None:
    """A 200 saying x-ratelimit-remaining: 0 and when it resets: the next validation waits
    for the reset instead of earning a 403."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    reset = str(int(time.time()) + 120)
    sim.add_fault("validate", "status", value=200, count=1,
                  headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    client = client_for(sim)
    first = client.validate(SecretStr(grant.access_token), now=dt.datetime.now(dt.UTC))
    second = client.validate(SecretStr(grant.access_token), now=dt.datetime.now(dt.UTC))
    assert (ValidationVerdict.VALID, ValidationVerdict.RATE_LIMITED, 1) == (
        first.verdict, second.verdict, sim.stats.validation_calls)


def oidc_client(sim: Any, **spec: Any) -> ProviderClient:
    body = {"type": "generic", "clientID": CLIENT_ID, "issuerURL": sim.issuer_url, "caBundle": sim.ca_pem, **spec}
    return ProviderClient(parse_provider("p", body), SecretStr(CLIENT_SECRET), connect_timeout=2, read_timeout=5)


def test_an_issuer_is_discovered_when_the_client_is_built(make_simulator: Any) -> None:
    """spec.issuerURL alone: the token, device and userinfo endpoints come from the discovery
    document; a refresh and a validation (account from preferred_username) work."""
    sim = make_simulator(profile="generic")
    grant = sim.issue_grant(CLIENT_ID, login="jane")
    client = oidc_client(sim)
    refreshed = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    assert refreshed.tokens is not None
    outcome = client.validate(refreshed.tokens.access_token, now=NOW)
    assert ((sim.token_url, sim.device_authorization_url, sim.validate_url), TokenVerdict.SUCCESS, "jane") == (
        (client.spec.token_url, client.spec.device_url, client.spec.validate_url),
        refreshed.classified.verdict, outcome.account)


def test_an_issuer_without_a_discovery_document_cannot_make_a_client(make_simulator: Any) -> None:
    sim = make_simulator(profile="github")
    with pytest.raises(DiscoveryError, match="has no discovery document") as raised:
        oidc_client(sim)
    assert not raised.value.transient


def test_an_issuer_that_does_not_answer_yet_is_tried_again_and_sends_no_token(
        make_simulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery failing for now (no answer, after 2 s): the client is built, a refresh fails
    as transient at once (it never waits for the issuer) with nothing sent to any token
    endpoint, and discovery is tried again in the background until it succeeds."""
    sim = make_simulator(profile="generic")
    grant = sim.issue_grant(CLIENT_ID)
    monkeypatch.setattr("externalauth.oauth.exchanging.DISCOVERY_RETRY", 0.0)
    down = {"answer": True}

    real_get = ProviderClient._get_document

    def flaky(self: ProviderClient, url: str) -> Any:
        if down["answer"]:
            time.sleep(2.0)
            raise transport_no_answer()
        return real_get(self, url)

    monkeypatch.setattr(ProviderClient, "_get_document", flaky)
    client = oidc_client(sim)
    started = time.monotonic()
    failed = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    took = time.monotonic() - started
    down["answer"] = False
    wait_for(lambda: client.unresolved() is None, timeout=20, message="discovery in the background")
    later = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    assert (TokenVerdict.TRANSIENT, True, TokenVerdict.SUCCESS, 1) == (
        failed.classified.verdict, took < 1.0, later.classified.verdict, sim.stats.token_calls)


def test_a_refresh_sent_too_late_for_its_claim_is_not_sent(make_simulator: Any) -> None:
    """§9.15 at the client: a call whose claim leaves less than the minimum window when it is
    about to be sent sends nothing (the refresh token is intact); one with 3 s left is cut at 3 s."""
    sim = make_simulator()
    grant = sim.issue_grant(CLIENT_ID)
    sim.add_fault("token", "latency", value=10)
    client = client_for(sim)
    late = client.refresh(SecretStr(grant.refresh_token), now=NOW, send_before=time.monotonic() + 1.0)
    calls = sim.stats.token_calls
    started = time.monotonic()
    tight = client.refresh(SecretStr(grant.refresh_token), now=NOW, send_before=time.monotonic() + 3.0)
    took = time.monotonic() - started
    assert (TokenVerdict.TRANSIENT, True, 0, TokenVerdict.TRANSIENT) == (
        late.classified.verdict, "not sent" in late.classified.message, calls, tight.classified.verdict)
    assert took < 4.5, f"took {took:.1f}s"


def transport_no_answer() -> Exception:
    from externalauth import transport
    return transport.NoAnswer(transport.NoAnswerKind.UNREACHABLE, "ConnectionError")


# --- through a CONNECT proxy (contract §9.15, security review finding 1) --------------------------
@pytest.fixture
def behind_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ConnectProxy]]:
    """Start a CONNECT proxy on loopback and point HTTPS_PROXY at it (NO_PROXY cleared)."""
    started: list[ConnectProxy] = []

    def start(**kwargs: Any) -> ConnectProxy:
        proxy = ConnectProxy(**kwargs)
        started.append(proxy)
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        return proxy

    yield start
    for proxy in started:
        proxy.close()


def test_a_ca_bundle_provider_refreshes_through_a_connect_proxy(make_simulator: Any, behind_proxy: Any) -> None:
    """The tunnelled TLS is verified with the provider's caBundle (requests' proxy pool dropped it:
    "could not verify the token endpoint's TLS certificate"), and the call went through the proxy."""
    sim = make_simulator()
    proxy = behind_proxy()
    grant = sim.issue_grant(CLIENT_ID)
    client = client_for(sim)
    result = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    outcome = client.validate(SecretStr(grant.access_token), now=NOW)
    origin = sim.url.split("://", 1)[1].rstrip("/")
    assert (TokenVerdict.SUCCESS, ValidationVerdict.INVALID, {origin}) == (
        result.classified.verdict, outcome.verdict, set(proxy.tunnels))


def test_an_unknown_ca_behind_a_proxy_is_still_refused(make_simulator: Any, behind_proxy: Any) -> None:
    sim = make_simulator()
    proxy = behind_proxy()
    grant = sim.issue_grant(CLIENT_ID)
    result = client_for(sim, trust=False).refresh(SecretStr(grant.refresh_token), now=NOW)
    assert (TokenVerdict.TRANSIENT, True, 1) == (
        result.classified.verdict, "TLS certificate" in result.classified.message, len(proxy.tunnels))


@pytest.mark.parametrize("where", [
    pytest.param("connect", id="a proxy that trickles its CONNECT answer is cut at the deadline"),
    pytest.param("tunnel", id="a proxy that trickles the tunnelled answer is cut at the deadline"),
])
def test_a_trickling_proxy_cannot_stretch_the_deadline(make_simulator: Any, behind_proxy: Any, where: str) -> None:
    """One byte every 0.2 s: each read is in time, the 2 s deadline still ends the call as
    transient (nothing consumed) well before the 60 s claim lease."""
    sim = make_simulator()
    behind_proxy(**{f"trickle_{where}": 0.2})
    grant = sim.issue_grant(CLIENT_ID)
    client = client_for(sim, deadline=2.0, read_timeout=20)
    started = time.monotonic()
    result = client.refresh(SecretStr(grant.refresh_token), now=NOW)
    elapsed = time.monotonic() - started
    assert result.classified.verdict in (TokenVerdict.TRANSIENT, TokenVerdict.UNUSABLE_ANSWER)
    assert elapsed < 3.5, f"took {elapsed:.1f}s"


def test_the_device_flow_goes_through_the_proxy(make_simulator: Any, behind_proxy: Any) -> None:
    """`externalauth login`'s device flow honours HTTPS_PROXY (it went direct before)."""
    from externalauth.oauth.device import DeviceFlow

    sim = make_simulator()
    proxy = behind_proxy()
    spec = parse_provider("p", {"type": "github", "clientID": CLIENT_ID, "baseURL": sim.url, "caBundle": sim.ca_pem})
    authorization = DeviceFlow(spec).start()
    assert (True, 1) == (bool(authorization.user_code), len(proxy.tunnels))


def test_calls_to_a_provider_reuse_one_kept_alive_connection(make_simulator: Any) -> None:
    """No proxy between: http.client's connection is kept and used again (transport.Direct),
    call after call, token and validation endpoints alike (one origin)."""
    sim = make_simulator()
    client = client_for(sim)
    sockets = set()
    for _ in range(5):
        grant = sim.issue_grant(CLIENT_ID)
        refreshed = client.refresh(SecretStr(grant.refresh_token), now=NOW)
        assert TokenVerdict.SUCCESS == refreshed.classified.verdict
        assert refreshed.tokens is not None
        assert ValidationVerdict.VALID == client.validate(refreshed.tokens.access_token, now=NOW).verdict
        direct = client._pool.direct_for(sim.url)
        assert direct is not None
        ((conn, _),) = direct._idle
        sockets.add(id(conn.sock))
    client.close()
    assert 1 == len(sockets)
