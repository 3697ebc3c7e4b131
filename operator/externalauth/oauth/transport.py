"""HTTPS transport: verified TLS with extra trust anchors, a shared connection pool, and
bounded calls (contract §9.10, §9.14).

:func:`fetch` is the one way the operator talks to a provider: redirects are never
followed (a 3xx is returned as it is, its body unread), the body is read streaming
and cut at :data:`MAX_BODY`, and the whole call (connect, TLS handshake, request,
headers, body) runs under one wall-clock :class:`Deadline`. Per-read timeouts alone
cannot stop a server that trickles one byte a second; the deadline's watchdog shuts
the connection's socket down when the budget is spent, wherever the call is blocked.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import http.cookiejar
import itertools
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import certifi
import requests
import requests.adapters

from externalauth import logs
from externalauth.proxying import proxies_for

__all__ = [
    "MAX_BODY",
    "Answer",
    "Deadline",
    "NoAnswer",
    "NoAnswerKind",
    "TrustingAdapter",
    "decode_answer",
    "fetch",
    "proxies_for",
    "session_for",
    "ssl_context",
]

MAX_BODY = 1024 * 1024  # bytes of a provider's answer that are ever read
_CHUNK = 64 * 1024

log = logging.getLogger(__name__)

# These libraries log request bodies and headers (tokens) at DEBUG: quiet them as soon
# as the token transport is imported, whoever imports it (contract §9.8).
logs.quiet_noisy_loggers()


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System trust (plus certifi's bundle) plus ``ca_bundle``; hostname checks on; TLS 1.2+.
    Its sockets report to the calling thread's :class:`Deadline`."""
    ctx = ssl.create_default_context()
    ctx.sslsocket_class = _WatchedSSLSocket
    ctx.load_verify_locations(cafile=certifi.where())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        ctx.load_verify_locations(cadata=ca_bundle)
    return ctx


class TrustingAdapter(requests.adapters.HTTPAdapter):
    """An HTTPS adapter whose pools use our SSL context (and refuse plain HTTP)."""

    def __init__(self, ctx: ssl.SSLContext, *, pool_size: int) -> None:
        self._ctx = ctx
        super().__init__(pool_connections=2, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Verification is on (the context requires it); do not swap the trust store.
        super().cert_verify(conn, url, verify=True, cert=cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = None
        conn.ca_cert_dir = None


def session_for(adapter: TrustingAdapter, session: requests.Session | None = None,
                *, proxies: dict[str, str] | None = None) -> requests.Session:
    s = session if session is not None else requests.Session()
    s.mount("https://", adapter)
    s.mount("http://", _RefusePlainHTTP())
    s.trust_env = False
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # never kept, never sent
    if proxies:
        s.proxies.update(proxies)
    return s


class _RefusePlainHTTP(requests.adapters.BaseAdapter):
    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise requests.exceptions.InvalidURL("plain http:// is refused: tokens travel only over TLS")

    def close(self) -> None:
        pass


# --- deadlines ----------------------------------------------------------------------------
_current = threading.local()


class Deadline:
    """A wall-clock budget for one call on this thread. Sockets created or used by the call
    (through an :func:`ssl_context` context) are shut down when the budget runs out."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            if self.expired:
                _shut(sock)
            elif sock not in self._sockets:
                self._sockets.append(sock)

    def expire(self) -> None:
        """Called by the watchdog: cut every socket of a call still running."""
        with self._lock:
            if self._done:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def __enter__(self) -> Deadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            self._sockets = []
        _current.deadline = self._previous


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown: it wakes a blocked read on the TLS socket without
        # unwrapping it under the reader's feet (SSLSocket.shutdown would).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread that expires deadlines in time order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._ids), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="provider-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline.expire()


_WATCHDOG = _Watchdog()


class _WatchedSSLSocket(ssl.SSLSocket):
    """Reports itself to the calling thread's deadline when it shakes hands (new connection)
    and when it sends (a kept-alive connection reused by a new call)."""

    def do_handshake(self, block: bool = False) -> None:
        _track(self)
        super().do_handshake(block)

    def sendall(self, data: Any, flags: int = 0) -> None:
        _track(self)
        super().sendall(data, flags)


def _track(sock: socket.socket) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.track(sock)


# --- bounded calls ------------------------------------------------------------------------
class NoAnswerKind(enum.StrEnum):
    TLS = "tls"  # the certificate could not be verified
    DEADLINE = "deadline"  # the overall deadline passed before the status line
    UNREACHABLE = "unreachable"  # refused, reset, timed out, DNS...
    REFUSED_URL = "refused_url"  # not https://, or not a usable URL


class NoAnswer(Exception):
    """No HTTP status came back. The message is the kind only: never a URL, header or token."""

    def __init__(self, kind: NoAnswerKind, cause: str) -> None:
        super().__init__(f"{kind.value} ({cause})")
        self.kind = kind
        self.cause = cause  # the library exception's type name, for logs


class BodyProblem(enum.StrEnum):
    TOO_LARGE = "too_large"
    DEADLINE = "deadline"
    BROKEN = "broken"  # the connection failed while reading


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: ``body`` is None when it was not read (a 3xx) or could not be read
    whole (``problem`` says why). ``headers`` have lower-case names."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    problem: BodyProblem | None = None
    # Seconds from sending the request to its status line and headers arriving: the
    # answer's arrival is the call's start plus this (expiry counts from the arrival).
    elapsed: float = 0.0

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}


def _read_body(resp: Any, *, deadline: Deadline, max_body: int) -> tuple[bytes | None, BodyProblem | None]:
    length = resp.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_body:
        return None, BodyProblem.TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in _chunks(resp):
            size += len(chunk)
            if size > max_body:
                return None, BodyProblem.TOO_LARGE
            chunks.append(chunk)
            if deadline.expired or deadline.remaining() <= 0:
                return None, BodyProblem.DEADLINE
    except (requests.RequestException, OSError, ValueError) as e:
        log.debug("reading a provider answer failed: %s", type(e).__name__)
        return None, BodyProblem.DEADLINE if deadline.expired else BodyProblem.BROKEN
    if deadline.expired:
        return None, BodyProblem.DEADLINE
    return b"".join(chunks), None


def _chunks(resp: Any) -> Iterator[bytes]:
    yield from resp.iter_content(chunk_size=_CHUNK)


def fetch(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: float,
    connect_timeout: float,
    read_timeout: float,
    max_body: int = MAX_BODY,
    **kwargs: Any,
) -> Answer:
    """One bounded request: no redirects followed, at most ``max_body`` bytes read, all of it
    within ``deadline`` seconds. Raises :class:`NoAnswer` when no status line came back."""
    headers = {"Accept-Encoding": "identity", **(kwargs.pop("headers", None) or {})}
    with Deadline(deadline) as budget:
        left = budget.remaining()
        timeout = (min(connect_timeout, left), min(read_timeout, left))
        started = time.monotonic()
        try:
            resp = session.request(method, url, headers=headers, timeout=timeout, allow_redirects=False,
                                   stream=True, **kwargs)
        except requests.exceptions.SSLError as e:
            if budget.expired:
                raise NoAnswer(NoAnswerKind.DEADLINE, type(e).__name__) from None
            raise NoAnswer(NoAnswerKind.TLS, type(e).__name__) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as e:
            raise NoAnswer(NoAnswerKind.REFUSED_URL, type(e).__name__) from None
        except (requests.RequestException, OSError, ValueError) as e:
            # ValueError: e.g. a header value requests refuses (its message holds the value).
            kind = NoAnswerKind.DEADLINE if budget.expired else NoAnswerKind.UNREACHABLE
            raise NoAnswer(kind, type(e).__name__) from None
        elapsed = time.monotonic() - started
        try:
            answer_headers = _lower(resp.headers)
            if budget.expired:  # the header block may have been cut short
                return Answer(resp.status_code, answer_headers, None, BodyProblem.DEADLINE, elapsed)
            if 300 <= resp.status_code < 400:
                return Answer(resp.status_code, answer_headers, None, elapsed=elapsed)
            body, problem = _read_body(resp, deadline=budget, max_body=max_body)
            return Answer(resp.status_code, answer_headers, body, problem, elapsed)
        finally:
            resp.close()


def decode_answer(answer: Answer) -> object:
    """The answer's JSON value (or its fields, for a form-encoded body); None if unreadable."""
    if answer.body is None:
        return None
    ctype = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = answer.body.decode("utf-8")
        if ctype == "application/x-www-form-urlencoded":
            return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
