"""The one HTTP stack (externalauth/transport.py): what it sends, what it refuses, and which
pool (direct or through a proxy, always with the provider's TLS context) a URL goes through."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import pytest
import urllib3

from externalauth import transport


class ScriptedPool:
    """Answers every request with the same scripted answer, read by the real ``fetch``."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sent: list[dict[str, Any]] = []

    def manager_for(self, url: str) -> ScriptedPool:
        return self

    def urlopen(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        self.sent.append({"method": method, "url": url, **kwargs})
        return urllib3.HTTPResponse(body=io.BytesIO(json.dumps({"ok": True}).encode()), status=200,
                                    headers=self.headers, preload_content=False)


def call(pool: Any, url: str = "https://provider.example/token", **kwargs: Any) -> transport.Answer:
    return transport.fetch(pool, "POST", url, deadline=5, connect_timeout=1, read_timeout=1, **kwargs)


def test_a_cookie_a_provider_sets_is_never_sent_back() -> None:
    """Pools live as long as the provider client: a kept cookie would go back on every later
    call of every link."""
    pool = ScriptedPool({"Set-Cookie": "sid=abc; Path=/"})
    call(pool)
    call(pool)
    assert [False, False] == [any(k.lower() == "cookie" for k in s["headers"]) for s in pool.sent]


def test_no_redirect_is_followed_and_nothing_is_retried() -> None:
    pool = ScriptedPool()
    call(pool)
    assert (False, False) == (pool.sent[0]["redirect"], pool.sent[0]["retries"])


@pytest.mark.parametrize("url", [
    pytest.param("http://provider.example/token", id="plain http is refused"),
    pytest.param("ftp://provider.example/token", id="another scheme is refused"),
    pytest.param("https:///token", id="a URL without a host is refused"),
    pytest.param("https://provider.example:99999/token", id="a URL with an impossible port is refused"),
])
def test_an_unusable_url_is_refused_before_anything_is_sent(url: str) -> None:
    pool = ScriptedPool()
    with pytest.raises(transport.NoAnswer) as e:
        call(pool, url)
    assert (transport.NoAnswerKind.REFUSED_URL, []) == (e.value.kind, pool.sent)


def test_a_form_and_basic_auth_are_encoded_as_rfc_6749_expects() -> None:
    pool = ScriptedPool()
    call(pool, form={"grant_type": "refresh_token", "refresh_token": "a b&c"}, auth=("cid", "s3cr:t"))
    sent = pool.sent[0]
    assert (b"grant_type=refresh_token&refresh_token=a+b%26c", "application/x-www-form-urlencoded",
            "Basic " + base64.b64encode(b"cid:s3cr:t").decode()) == (
        sent["body"], sent["headers"]["Content-Type"], sent["headers"]["Authorization"])


@pytest.mark.parametrize(("env", "url", "through"), [
    pytest.param({"HTTPS_PROXY": "http://proxy.corp:3128"}, "https://provider.example/token",
                 "http://proxy.corp:3128", id="HTTPS_PROXY is used for an https provider"),
    pytest.param({"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".example"},
                 "https://provider.example/token", None, id="NO_PROXY's domain goes direct"),
    pytest.param({}, "https://provider.example/token", None, id="no proxy set goes direct"),
    pytest.param({"ALL_PROXY": "http://all.corp:8080"}, "https://provider.example/token",
                 "http://all.corp:8080", id="ALL_PROXY is used when HTTPS_PROXY is not set"),
])
def test_a_proxy_pool_keeps_the_providers_tls_context(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                      url: str, through: str | None) -> None:
    """Security review finding 1: requests' proxy pool was built without our SSL context, so a
    provider with a caBundle failed behind HTTPS_PROXY. Both pools here carry it."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
                 "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ctx = transport.provider_context(None)
    manager = transport.Pool(ctx, maxsize=2).manager_for(url)
    proxy = manager.proxy.url if isinstance(manager, urllib3.ProxyManager) and manager.proxy else None
    assert (through, True) == (proxy, manager.connection_pool_kw["ssl_context"] is ctx)


def test_proxy_credentials_go_in_proxy_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://al%40ice:pw@proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    manager = transport.Pool(transport.provider_context(None), maxsize=1).manager_for("https://p.example/t")
    assert isinstance(manager, urllib3.ProxyManager)
    assert {"proxy-authorization": "Basic " + base64.b64encode(b"al@ice:pw").decode()} == {
        k.lower(): v for k, v in manager.proxy_headers.items()}


def _expires(deadline: transport.Deadline, within: float) -> bool:
    """Does ``deadline`` expire within ``within`` seconds (watched, not slept through)?"""
    until = time.monotonic() + within
    while not deadline.expired and time.monotonic() < until:
        time.sleep(0.01)
    return deadline.expired


@pytest.mark.parametrize(("first", "first_ends"), [
    pytest.param(60.0, False, id="a short deadline added while a longer one runs wakes the watchdog"),
    pytest.param(0.05, True, id="a deadline after one whose call already ended"),
    pytest.param(60.0, True, id="a short deadline after a longer one whose call already ended"),
])
def test_the_watchdog_expires_a_deadline_on_time_whatever_came_before(first: float, first_ends: bool) -> None:
    """The watchdog is woken only by a deadline earlier than the one it sleeps for, and
    passes over calls that ended without a wake-up each: neither may delay a deadline."""
    earlier = transport.Deadline(first)
    earlier.__enter__()
    if first_ends:
        earlier.__exit__()
    try:
        with transport.Deadline(0.2) as short:
            assert _expires(short, within=5.0)
    finally:
        if not first_ends:
            earlier.__exit__()
    assert not earlier.expired or first <= 0.2
