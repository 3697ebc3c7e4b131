"""Authorization code + PKCE: the challenge, the URL the browser opens, the redirect's verdict,
the code exchange (against a scripted pool), and the loopback listener (a real socket on
127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

import pytest
import urllib3

from externalauth.errors import InvalidInputError, PermanentError
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_provider
from externalauth.oauth import pkce
from externalauth.oauth.loopback import LoopbackReceiver
from externalauth.providers import ProviderType

SPEC = parse_provider("gh", {"type": "github", "clientID": "cid", "baseURL": "https://gh.example"})
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_the_challenge_is_s256_of_the_verifier_as_in_rfc_7636_appendix_b() -> None:
    verifier = SecretStr("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" == pkce.challenge(verifier)


@pytest.mark.parametrize(("size", "length"), [
    pytest.param(32, 43, id="32 random bytes make the shortest verifier RFC 7636 allows"),
    pytest.param(64, 86, id="64 random bytes, the default, make 86 characters"),
    pytest.param(200, 128, id="more than 96 bytes never make a verifier longer than 128"),
])
def test_a_verifier_is_43_to_128_unreserved_characters(size: int, length: int) -> None:
    verifier = pkce.verifier_from(bytes(range(256))[:size]).reveal()
    assert (length, True) == (len(verifier), set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"))


def test_too_little_randomness_is_refused() -> None:
    with pytest.raises(ValueError, match="32 random bytes"):
        pkce.verifier_from(b"x" * 31)


def test_the_authorization_url_asks_for_a_code_with_s256_and_keeps_the_endpoints_query() -> None:
    url = pkce.authorization_url("https://login.example/t/oauth2/authorize?domain_hint=corp", client_id="c i",
                                 redirect_uri="http://127.0.0.1:5000/callback", scopes=("repo", "read:org"),
                                 state="s", code_challenge="ch")
    parts = urllib.parse.urlsplit(url)
    assert ("https", "login.example", "/t/oauth2/authorize") == (parts.scheme, parts.netloc, parts.path)
    assert [("domain_hint", "corp"), ("response_type", "code"), ("client_id", "c i"),
            ("redirect_uri", "http://127.0.0.1:5000/callback"), ("scope", "repo read:org"), ("state", "s"),
            ("code_challenge", "ch"), ("code_challenge_method", "S256")] == urllib.parse.parse_qsl(parts.query)


@pytest.mark.parametrize(("kind", "token_url", "expected"), [
    pytest.param(ProviderType.GITHUB, "https://github.com/login/oauth/access_token",
                 "https://github.com/login/oauth/authorize", id="GitHub authorizes beside its token endpoint"),
    pytest.param(ProviderType.GITLAB, "https://gitlab.example/oauth/token", "https://gitlab.example/oauth/authorize",
                 id="GitLab"),
    pytest.param(ProviderType.GITEA, "https://gitea.example/login/oauth/access_token",
                 "https://gitea.example/login/oauth/authorize", id="Gitea"),
    pytest.param(ProviderType.BITBUCKET_CLOUD, "https://bitbucket.org/site/oauth2/access_token",
                 "https://bitbucket.org/site/oauth2/authorize", id="Bitbucket Cloud"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, "https://login.microsoftonline.com/t1/oauth2/v2.0/token",
                 "https://login.microsoftonline.com/t1/oauth2/v2.0/authorize", id="Entra keeps the tenant"),
    pytest.param(ProviderType.GENERIC, "https://idp.example/token", None, id="a generic server must say"),
])
def test_the_default_authorization_endpoint(kind: ProviderType, token_url: str, expected: str | None) -> None:
    assert expected == pkce.default_authorization_url(kind, token_url)


GENERIC = parse_provider("g", {"type": "generic", "clientID": "c", "tokenURL": "https://idp.example/token"})


@pytest.mark.parametrize(("spec", "raw", "expected"), [
    pytest.param(SPEC, {}, "https://gh.example/login/oauth/authorize", id="the type's default"),
    pytest.param(GENERIC, {"authorizationURL": "https://idp.example/auth"}, "https://idp.example/auth",
                 id="spec.authorizationURL when given"),
    pytest.param(GENERIC, {}, "neither a device endpoint", id="a generic provider without one cannot sign in"),
    pytest.param(SPEC, {"authorizationURL": "http://gh.example/authorize"}, "must be an https:// URL",
                 id="never a plain http authorization endpoint"),
])
def test_the_authorization_endpoint_of_a_provider(spec: Any, raw: dict[str, Any], expected: str) -> None:
    try:
        got = pkce.authorization_endpoint(spec, raw)
    except InvalidInputError as e:
        got = str(e)
    assert expected in got


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param("code=abc&state=s1", ("abc", None), id="a code with our state"),
    pytest.param("code=abc&state=other", (None, "state_mismatch"), id="another state is refused"),
    pytest.param("code=abc", (None, "state_mismatch"), id="no state is refused"),
    pytest.param("code=abc&state=s1&state=s1", (None, "state_mismatch"), id="two states are refused"),
    pytest.param("error=access_denied&state=s1", (None, "access_denied"), id="the user denied"),
    pytest.param("error=%1b%5b2J&state=s1", (None, "unknown"), id="an error code with escapes is never shown"),
    pytest.param("state=s1", (None, "invalid_request"), id="neither code nor error"),
    pytest.param("error=access_denied&state=x", (None, "state_mismatch"),
                 id="an error with a forged state is a forgery first"),
])
def test_the_redirect_verdict(query: str, expected: tuple[str | None, str | None]) -> None:
    got = pkce.read_callback(query, state="s1")
    assert expected == (got.code.reveal() if got.code else None, got.error)


# --- the code exchange, through a scripted pool (the transport's seam) ------------------------
class FakePool:
    """One scripted answer, read by the real ``transport.fetch``."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body, self.status = body, status
        self.sent: list[dict[str, Any]] = []

    def manager_for(self, url: str) -> FakePool:
        return self

    def direct_for(self, url: str) -> None:
        return None  # every call through urlopen (a proxied route's way), scripted here

    def urlopen(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        self.sent.append({"method": method, "url": url, **kwargs})
        headers = {"Content-Type": "application/json"} if self.status < 300 or self.status >= 400 else {
            "Location": "https://elsewhere.example/"}
        return urllib3.HTTPResponse(body=io.BytesIO(json.dumps(self.body).encode()), status=self.status,
                                    headers=headers, preload_content=False)


def exchange(pool: FakePool) -> Any:
    return pkce.exchange_code(SPEC, code=SecretStr("the-code"), verifier=SecretStr("v" * 43),
                              redirect_uri="http://127.0.0.1:5000/callback", pool=pool,  # type: ignore[arg-type]
                              now=NOW)


def test_the_exchange_sends_the_code_and_verifier_as_a_public_client_and_never_follows_redirects() -> None:
    pool = FakePool({"access_token": "at", "refresh_token": "rt", "expires_in": 3600})
    tokens = exchange(pool)
    sent = pool.sent[0]
    assert ("at", "rt", NOW + dt.timedelta(hours=1)) == (
        tokens.access_token.reveal(), tokens.refresh_token.reveal(), tokens.expiry)
    assert ("POST", "https://gh.example/login/oauth/access_token", False, False, None) == (
        sent["method"], sent["url"], sent["redirect"], sent["retries"], sent["headers"].get("Authorization"))
    assert {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": "http://127.0.0.1:5000/callback",
            "client_id": "cid", "code_verifier": "v" * 43} == dict(urllib.parse.parse_qsl(sent["body"].decode()))


@pytest.mark.parametrize(("body", "status", "message"), [
    pytest.param({"error": "bad_verification_code"}, 200, "did not accept the authorization code",
                 id="GitHub's bad code, with HTTP 200"),
    pytest.param({"error": "invalid_grant"}, 400, "did not accept the authorization code", id="a refused code"),
    pytest.param({"error": "incorrect_client_credentials"}, 200, "not a public client",
                 id="an app that wants its secret"),
    pytest.param({"error": "\x1b[2Jowned"}, 400, "(unknown)", id="a hostile error code is not shown"),
    pytest.param({}, 200, "did not hand out a token", id="an answer without a token"),
    pytest.param({}, 302, "a redirect, which is never followed", id="a redirect"),
    pytest.param(["not", "an", "object"], 200, "without a JSON body", id="JSON that is not an object"),
])
def test_an_exchange_that_brings_no_token_fails_with_a_safe_message(body: Any, status: int, message: str) -> None:
    with pytest.raises(PermanentError) as e:
        exchange(FakePool(body, status))
    assert (True, False, False) == (message in str(e.value), "the-code" in str(e.value), "\x1b" in str(e.value))


# --- the loopback listener: a real socket ------------------------------------------------------
def browse(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def in_background(receiver: LoopbackReceiver, seconds: float = 10) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["callback"] = receiver.wait(seconds=seconds)

    t = threading.Thread(target=run)
    t.start()
    result["thread"] = t
    return result


def closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_listener_takes_one_callback_with_our_state_then_closes() -> None:
    """A favicon request is answered 404 and does not count; the callback ends the wait; the
    port is closed after it."""
    receiver = LoopbackReceiver(state="s1")
    run = in_background(receiver)
    favicon = browse(f"http://127.0.0.1:{receiver.port}/favicon.ico")[0]
    status, page = browse(f"{receiver.redirect_uri}?code=abc&state=s1")
    run["thread"].join(10)
    callback = run["callback"]
    assert (404, 200, "abc", True) == (favicon, status, callback.code.reveal(), closed(receiver.port))
    assert ("abc" not in page, "Signed in" in page) == (True, True)


def test_the_listener_listens_on_127_0_0_1_only_on_an_ephemeral_port() -> None:
    receiver = LoopbackReceiver(state="s1")
    try:
        assert (f"http://127.0.0.1:{receiver.port}/callback", True) == (receiver.redirect_uri, receiver.port > 1023)
    finally:
        receiver.close()


def test_a_callback_with_another_state_is_ignored_and_the_sign_in_keeps_waiting() -> None:
    """Security review finding 9: a forged GET /callback?state=x from any local process used
    to end `login`; it is answered 400 and ignored, and our own callback still completes it."""
    receiver = LoopbackReceiver(state="s1")
    run = in_background(receiver)
    forged = [browse(f"{receiver.redirect_uri}?code=stolen&state=s2")[0],
              browse(f"{receiver.redirect_uri}?error=access_denied")[0]]
    assert run["thread"].is_alive() and not closed(receiver.port)
    status, _ = browse(f"{receiver.redirect_uri}?code=ours&state=s1")
    run["thread"].join(10)
    assert ([400, 400], 200, "ours", 2) == (forged, status, run["callback"].code.reveal(), receiver.ignored)


def test_no_callback_in_time_is_none_and_the_port_is_closed() -> None:
    receiver = LoopbackReceiver(state="s1")
    ticks: list[int] = []
    got = receiver.wait(seconds=0.3, tick=lambda: ticks.append(1))
    assert (None, True, True) == (got, closed(receiver.port), len(ticks) >= 1)
