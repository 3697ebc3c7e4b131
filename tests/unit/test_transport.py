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

    def direct_for(self, url: str) -> None:
        return None  # every call through urlopen (a proxied route's way), scripted here

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


# --- answers' headers (transport.parse_headers, in place of http.client's email parser) ------
def email_headers(block: bytes) -> list[tuple[str, str]]:
    """The headers http.client's own parser (the email package) reads from ``block``."""
    import email.parser
    import http.client

    return list(email.parser.Parser(_class=http.client.HTTPMessage).parsestr(block.decode("iso-8859-1")).items())


def our_headers(block: bytes) -> list[tuple[str, str]]:
    return list(transport.parse_headers(io.BytesIO(block)).items())


@pytest.mark.parametrize("block", [
    pytest.param(b"Content-Type: application/json\r\nAudit-Id: 1\r\n\r\n", id="plain headers"),
    pytest.param(b"A: 1\r\na: 2\r\nA: 3\r\n\r\n", id="a header repeated, in any case"),
    pytest.param(b"A:\t  b \r\nB:\r\nC:: d\r\n\r\n", id="only a value's leading blanks go"),
    pytest.param(b"A:b\r\n c\r\n\td\r\nE: f \r\n\r\n", id="folded lines are joined as email joins them"),
    pytest.param(b"A: \r\n  c\r\n\r\n", id="a value only on the folded line"),
    pytest.param(b" lead\r\nA: b\r\n\r\n", id="a continuation with nothing before it is skipped"),
    pytest.param(b"A: b\r\nnot a header\r\nC: d\r\n\r\n", id="a line that is not a header ends the block"),
    pytest.param(b"A :b\r\nC: d\r\n\r\n", id="a space before the colon is not a header"),
    pytest.param(b":x\r\nA: b\r\n\r\n", id="an empty field name is skipped"),
    pytest.param(b"From x\r\nA: b\r\nFrom y\r\nC: d\r\n\r\n", id="From lines are skipped"),
    pytest.param(b"A: b\rC: d\r\n\r\n", id="a lone CR ends a line"),
    pytest.param(b"A: b\nC: d\n\n", id="LF line ends"),
    pytest.param(b"A: \xe9\xff\r\n\r\n", id="bytes beyond ASCII are Latin-1"),
    pytest.param(b"\r\n", id="no headers"),
    pytest.param(b"A: b\r\n", id="the connection closed after the last header"),
])
def test_an_answers_headers_are_read_as_the_email_parser_reads_them(block: bytes) -> None:
    assert email_headers(block) == our_headers(block)


def test_random_header_blocks_are_read_as_the_email_parser_reads_them() -> None:
    """2,000 blocks drawn from header-ish pieces (seeded, so a failure repeats)."""
    import random

    rng = random.Random(20261206)
    pieces = [b"Name: value", b"X-A:", b"x", b" folded", b"\tfolded", b"", b":", b"From me", b"a b: c",
              b"K:v\r", b"\xe9: \xe9", b"  ", b"Content-Length: 1", b"A\t: b"]
    ends = [b"\r\n", b"\n", b"\r"]
    mismatches, plain = [], 0
    for _ in range(2000):
        block = b"".join(rng.choice(pieces) + rng.choice(ends) for _ in range(rng.randint(0, 6))) + b"\r\n"
        plain += transport._PLAIN.fullmatch(block.decode("iso-8859-1")) is not None
        if email_headers(block) != our_headers(block):
            mismatches.append(block)
    assert ([], True) == (mismatches, plain >= 200)  # both ways of reading, each many times


def test_http_client_reads_every_answers_headers_with_ours() -> None:
    import http.client

    assert http.client.parse_headers is transport.parse_headers


# --- a provider's answer over http.client (transport._pieces, _read_chunks) -----------------
class Wire:
    """A socket whose reads are ``raw``: http.client's real answer parser reads from it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.raw))


def answer_of(body: bytes, coding: str | None) -> Any:
    import http.client

    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if coding:
        head += f"Content-Encoding: {coding}\r\n".encode()
    answer = http.client.HTTPResponse(Wire(head + b"Content-Length: %d\r\n\r\n" % len(body) + body))  # type: ignore[arg-type]
    answer.begin()
    return answer


def body_of(answer: Any, max_body: int = transport.MAX_BODY) -> tuple[bytes | None, Any]:
    with transport.Deadline(30) as budget:
        return transport._read_chunks(None, transport._pieces(answer), deadline=budget, max_body=max_body)


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def deflated(data: bytes, wbits: int) -> bytes:
    import zlib

    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


PLAIN = b'{"access_token": "a", "token_type": "bearer"}'


@pytest.mark.parametrize(("body", "coding"), [
    pytest.param(PLAIN, None, id="no coding"),
    pytest.param(PLAIN, "identity", id="identity"),
    pytest.param(gzipped(PLAIN), "gzip", id="gzip, though identity was asked for"),
    pytest.param(gzipped(PLAIN), "x-gzip", id="x-gzip"),
    pytest.param(deflated(PLAIN, 15), "deflate", id="deflate, zlib-wrapped as the RFC says"),
    pytest.param(deflated(PLAIN, -15), "deflate", id="deflate, raw as some servers send it"),
])
def test_a_providers_body_is_decoded_as_urllib3_decoded_it(body: bytes, coding: str | None) -> None:
    assert (PLAIN, None) == body_of(answer_of(body, coding))


def test_a_body_in_another_coding_is_handed_on_as_it_came() -> None:
    assert (b"\x00br\x01", None) == body_of(answer_of(b"\x00br\x01", "br"))


def test_a_compressed_bomb_is_cut_at_the_cap_without_inflating_it_whole() -> None:
    """64 MiB of zeros in ~64 KiB of gzip: cut at the 1 MiB cap, read a piece at a time."""
    bomb = gzipped(bytes(64 * 1024 * 1024))
    pieces = transport._pieces(answer_of(bomb, "gzip"))
    sizes = [len(next(pieces)) for _ in range(20)]
    assert (True, (None, transport.BodyProblem.TOO_LARGE)) == (
        max(sizes) <= transport._CHUNK, body_of(answer_of(bomb, "gzip")))


def test_a_broken_compressed_body_is_a_broken_answer() -> None:
    assert (None, transport.BodyProblem.BROKEN) == body_of(answer_of(b"not gzip at all", "gzip"))
