"""The one HTTP stack: urllib3 pools with verified TLS, proxies that keep our TLS context, and
bounded calls (contract §9.10, §9.14, §9.15). I/O.

Providers (``oauth/``, the CLI's sign-in flows) and the API-server client (``kube/``) build
their pools here: :func:`provider_context` is the provider trust (system + certifi + the
provider's ``caBundle``, TLS 1.2+, hostname checks), :class:`Pool` picks a direct pool or a
CONNECT proxy (``HTTPS_PROXY``/``NO_PROXY``, resolved once per destination) and hands the
proxy pool **the same** TLS context for the tunnelled connection, :func:`open_pool` does the
same for a single origin (the API server).

:func:`fetch` is the one way the operator talks to a provider: redirects are never followed
(a 3xx is returned as it is, its body unread), no cookie is ever kept or sent (urllib3 has no
cookie jar), the body is read streaming and cut at :data:`MAX_BODY`, and the whole call
(connect, the proxy's CONNECT, TLS handshake, request, headers, body) runs under one
wall-clock :class:`Deadline`. Per-read timeouts alone cannot stop a server or a proxy that
trickles one byte a second; the deadline's watchdog shuts the connection's socket down when
the budget is spent, wherever the call is blocked (the proxy's socket before the tunnel is
up included).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import heapq
import http.client
import itertools
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

import certifi
import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from urllib3.util import wait_for_read

from externalauth import __version__, logs
from externalauth.proxying import proxies_for

__all__ = [
    "MAX_BODY",
    "Answer",
    "BodyProblem",
    "Deadline",
    "NoAnswer",
    "NoAnswerKind",
    "Pool",
    "decode_answer",
    "fetch",
    "open_pool",
    "provider_context",
]

MAX_BODY = 1024 * 1024  # bytes of a provider's answer that are ever read
_CHUNK = 64 * 1024
USER_AGENT = f"externalauth/{__version__}"

log = logging.getLogger(__name__)

# urllib3 logs request lines and headers at DEBUG: quiet it as soon as the transport is
# imported, whoever imports it (contract §9.8).
logs.quiet_noisy_loggers()


# --- answers' headers -----------------------------------------------------------------------
#: A header line as the ``email`` package tells one (RFC 5322 field name, then a colon).
_FIELD = re.compile(r"[\041-\071\073-\176]*:")
#: A block of nothing but one-line headers with CRLF ends and the blank line: the usual
#: answer, split without looking at each line's shape.
_PLAIN = re.compile(r"(?:[\041-\071\073-\176]+:[^\r\n]*\r\n)*\r\n")
#: One line with its end, as ``email`` splits them (CR, LF or CRLF).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def parse_headers(fp: Any, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
                  ) -> http.client.HTTPMessage:
    """An answer's header block, read by :mod:`http.client`'s own reader (its limits on
    line length and count) and split into the same headers the ``email`` parser gives,
    for about a third of its CPU (9 µs against 29 for an API server's usual block): the
    ``email`` feed parser was ~6 % of the operator's samples in the storm
    (docs/decisions.md, record 6).

    The same headers, in the same order, with the same values (folded lines joined as
    ``email`` joins them); like ``email``, the block ends at a line that is neither a
    header nor a continuation, lines of an empty field name are skipped, and so are
    ``From `` lines and a continuation with nothing before it."""
    text = b"".join(_read_headers(fp)).decode("iso-8859-1")
    message = _class()
    if _PLAIN.fullmatch(text):  # every line "Name: value" with CRLF, then the blank line
        for plain in text.split("\r\n")[:-2]:
            field_name, _, value = plain.partition(":")
            message[field_name] = value.lstrip(" \t")
        return message
    name: str | None = None
    lines: list[str] = []
    for line in _LINE.findall(text):
        if line[0] in " \t":
            if name is not None:
                lines.append(line)
            continue
        if name is not None:
            message[name] = (lines[0].lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")
            name = None
        if line.startswith("From "):
            continue
        field = _FIELD.match(line)
        if field is None:
            break  # the blank line, or where email's parser would see the body begin
        if field.end() > 1:
            name, lines = line[:field.end() - 1], [line[field.end():]]
    if name is not None:
        message[name] = (lines[0].lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")
    return message


#: http.client's reader of a header block (with its limits on line length and count).
_read_headers: Any = getattr(http.client, "_read_headers", None)
if _read_headers is not None:
    # http.client reads every answer's headers through this module-level name (urllib3's
    # connections included): the same result, cheaper.
    http.client.parse_headers = parse_headers  # type: ignore[assignment]  # same contract, one overload


# --- TLS ------------------------------------------------------------------------------------
def provider_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System trust (plus certifi's bundle) plus ``ca_bundle``; hostname checks on; TLS 1.2+.
    Its sockets report to the calling thread's :class:`Deadline`."""
    ctx = ssl.create_default_context()
    watch(ctx)
    ctx.load_verify_locations(cafile=certifi.where())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        ctx.load_verify_locations(cadata=ca_bundle)
    return ctx


def watch(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``ctx``'s TLS sockets report to the calling thread's :class:`Deadline` (when they
    shake hands and when they send)."""
    ctx.sslsocket_class = _WatchedSSLSocket
    return ctx


# --- pools ----------------------------------------------------------------------------------
class _WatchedConnection(urllib3.connection.HTTPSConnection):
    """Reports its plain socket to the calling thread's deadline as soon as it exists: a proxy
    that trickles its CONNECT answer is cut too, before any TLS is spoken."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)
        return sock


class _WatchedPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedConnection


class _RefusedScheme(urllib3.connectionpool.HTTPConnectionPool):
    """Plain http:// destinations: refused before anything is sent."""

    def urlopen(self, *args: Any, **kwargs: Any) -> Any:
        raise urllib3.exceptions.LocationValueError("plain http:// is refused: tokens travel only over TLS")


_POOL_CLASSES: dict[str, type[urllib3.connectionpool.HTTPConnectionPool]] = {
    "http": _RefusedScheme, "https": _WatchedPool}


def _proxy_headers(proxy: str) -> dict[str, str]:
    """Proxy-Authorization from the proxy URL's user info (as curl and requests send it)."""
    parts = urllib.parse.urlsplit(proxy)
    if parts.username is None:
        return {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    return dict(urllib3.make_headers(proxy_basic_auth=f"{user}:{password}"))


def _manager(ctx: ssl.SSLContext, *, proxy: str | None, maxsize: int, num_pools: int = 4,
             plain_http: bool = False, **tls: Any) -> urllib3.PoolManager:
    """A pool manager (through ``proxy`` when given) whose destination TLS uses ``ctx``: the
    tunnelled TLS of a CONNECT proxy included (requests' ``proxy_manager_for`` dropped it)."""
    manager: urllib3.PoolManager
    if proxy:
        proxy_ctx = watch(ssl.create_default_context(cafile=certifi.where()))  # an https:// proxy's own TLS
        proxy_ctx.load_default_certs()
        manager = urllib3.ProxyManager(proxy, num_pools=num_pools, maxsize=maxsize, block=False,
                                       ssl_context=ctx, proxy_ssl_context=proxy_ctx,
                                       proxy_headers=_proxy_headers(proxy), **tls)
    else:
        manager = urllib3.PoolManager(num_pools=num_pools, maxsize=maxsize, block=False, ssl_context=ctx, **tls)
    manager.pool_classes_by_scheme = {**_POOL_CLASSES, "http": urllib3.HTTPConnectionPool} if plain_http \
        else _POOL_CLASSES
    return manager


def open_pool(url: str, ctx: ssl.SSLContext, *, maxsize: int, proxy: str | None = None,
              **tls: Any) -> urllib3.PoolManager:
    """A pool for one origin (the API server): through ``proxy`` (a kubeconfig's
    ``proxy-url``) if given, else through the environment's proxy for ``url``, else direct.
    ``tls``: urllib3's TLS options (``server_hostname``, ``assert_hostname``, ``cert_reqs``)."""
    return _manager(ctx, proxy=proxy or _environment_proxy(url), maxsize=maxsize, num_pools=2, plain_http=True,
                    **tls)


def _environment_proxy(url: str) -> str | None:
    chosen = proxies_for(url)
    return chosen.get(urllib.parse.urlsplit(url).scheme) or chosen.get("all") or None


class Pool:
    """Connections to one provider's endpoints: one direct pool manager, one per proxy. Each
    URL's proxy is resolved once from the environment (``HTTPS_PROXY``, ``NO_PROXY``...).
    Thread-safe; ``maxsize`` connections kept per origin."""

    def __init__(self, ctx: ssl.SSLContext, *, maxsize: int) -> None:
        self.context = ctx
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._direct = _manager(ctx, proxy=None, maxsize=maxsize)
        self._proxied: dict[str, urllib3.PoolManager] = {}
        self._routes: dict[str, urllib3.PoolManager] = {}  # origin -> manager
        self._directs: dict[str, Direct | None] = {}  # origin -> its direct connections, if no proxy

    def manager_for(self, url: str) -> urllib3.PoolManager:
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        manager = self._routes.get(origin)
        if manager is not None:
            return manager
        proxy = _environment_proxy(url)
        with self._lock:
            if proxy is None:
                manager = self._direct
            else:
                manager = self._proxied.get(proxy)
                if manager is None:
                    manager = self._proxied[proxy] = _manager(self.context, proxy=proxy, maxsize=self._maxsize)
            self._routes[origin] = manager
        return manager

    def direct_for(self, url: str) -> Direct | None:
        """Kept-alive http.client connections to ``url``'s origin when no proxy stands
        between, else None (the call goes through the proxy's urllib3 pool)."""
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self._directs:
            return self._directs[origin]
        manager = self.manager_for(url)
        with self._lock:
            direct = Direct(origin, self.context, maxsize=self._maxsize) if manager is self._direct else None
            return self._directs.setdefault(origin, direct)

    def close(self) -> None:
        with self._lock:
            for manager in (self._direct, *self._proxied.values()):
                manager.clear()
            for direct in self._directs.values():
                if direct is not None:
                    direct.clear()


class Direct:
    """Kept-alive :mod:`http.client` connections straight to one origin, when no proxy stands
    between: the API server's requests that are read whole (all but watches) and provider
    calls. The connection and its answer are http.client's own, with the caller's TLS
    context, without urllib3's per-request layers (they cost ~180 µs of a PATCH's ~440 µs
    of CPU, and ~40 % of a provider call; docs/decisions.md, record 6). Proxied routes
    and watches stay on urllib3. Thread-safe; at most ``maxsize`` idle connections are kept
    (more are opened when needed, as urllib3's ``block=False``)."""

    def __init__(self, url: str, ctx: ssl.SSLContext, *, maxsize: int) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or ""
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._context = ctx
        self._maxsize = maxsize
        # Idle connections, each with the monotonic time it was put back.
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        #: A connection idle longer than this (seconds) is checked before use for a close by
        #: the server; one used since is taken as it is (in a storm each is back within
        #: milliseconds, and the check is a system call that gives up the GIL). Should the
        #: server have closed it anyway, the request fails as transient and is retried.
        self.stale_after = 1.0

    def take(self, connect: float | None) -> http.client.HTTPConnection:
        """An idle connection the server has not closed meanwhile, else a new one (not yet
        connected: ``connect`` bounds its connection and TLS handshake)."""
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                break
            conn, since = idle
            if conn.sock is not None and (time.monotonic() - since <= self.stale_after
                                          or not wait_for_read(conn.sock, timeout=0.0)):
                return conn
            conn.close()  # closed by the server (or it sent something unasked): not reusable
        if self._tls:
            return http.client.HTTPSConnection(self._host, self._port, timeout=connect, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=connect)

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        """A connection whose answer was read whole, kept for the next request if there is room."""
        with self._lock:
            kept = len(self._idle) < self._maxsize
            if kept:
                self._idle.append((conn, time.monotonic()))
        if not kept:
            conn.close()

    @staticmethod
    def send(conn: http.client.HTTPConnection, method: str, target: str, *, body: bytes | None,
             headers: Mapping[str, str], read: float | None) -> None:
        """Connect if need be (within the connection's own timeout), then send the request;
        each later read waits at most ``read`` seconds."""
        if conn.sock is None:
            conn.connect()
        cast(Any, conn.sock).settimeout(read)
        conn.request(method, target, body=body, headers=headers)

    def request(self, method: str, target: str, *, body: bytes | None, headers: Mapping[str, str],
                limits: tuple[float | None, float | None]) -> tuple[int, Mapping[str, str], bytes]:
        """One request and its whole answer: status, headers, body. Raises :class:`OSError`
        (TLS included), :class:`ValueError` (unsendable) or
        :class:`urllib3.exceptions.ProtocolError` when no complete answer came."""
        connect, read = limits
        conn = self.take(connect)
        try:
            self.send(conn, method, target, body=body, headers=headers, read=read)
        except BaseException:
            conn.close()
            raise
        try:
            answer = conn.getresponse()
            content = answer.read()
        except http.client.HTTPException as e:  # not an OSError: a bad status line, a cut body, a bad chunk
            conn.close()
            raise urllib3.exceptions.ProtocolError(f"the answer was cut or malformed ({type(e).__name__})") from e
        except BaseException:
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            self.give_back(conn)
        return answer.status, cast(Mapping[str, str], answer.msg), content

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


# --- deadlines ------------------------------------------------------------------------------
_current = threading.local()


class Deadline:
    """A wall-clock budget for one call on this thread. Sockets created or used by the call
    (through a :func:`watch`-ed context or a :class:`Pool`) are shut down when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def done(self) -> bool:
        """The call ended (its deadline no longer matters)."""
        return self._done

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
        # unwrapping it under the reader's feet (SSLSocket.shutdown would). A plain socket
        # since wrapped in TLS is detached (EBADF): its TLS socket is tracked as well.
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
            if self._heap[0][2] is deadline:  # else the watchdog already wakes up earlier
                self._cond.notify()

    def _run(self) -> None:
        """Sleep until the earliest deadline; expire it if its call still runs. Calls that
        ended leave the heap when they come first, without a wake-up each (a storm's
        thousand calls of 100 ms wake this thread about once a deadline's length, not a
        thousand times)."""
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                if deadline.done:
                    heapq.heappop(self._heap)
                    continue
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


# --- bounded calls --------------------------------------------------------------------------
class NoAnswerKind(enum.StrEnum):
    TLS = "tls"  # the certificate could not be verified
    DEADLINE = "deadline"  # the overall deadline passed before the status line
    UNREACHABLE = "unreachable"  # refused, reset, timed out, DNS, the proxy refused...
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


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _read_body(resp: urllib3.BaseHTTPResponse, *, deadline: Deadline,
               max_body: int) -> tuple[bytes | None, BodyProblem | None]:
    return _read_chunks(resp.headers.get("content-length"), _chunks(resp), deadline=deadline, max_body=max_body)


def _read_chunks(length: str | None, pieces: Iterator[bytes], *, deadline: Deadline,
                 max_body: int) -> tuple[bytes | None, BodyProblem | None]:
    """A body from its (decoded) pieces, cut at ``max_body`` bytes and at the deadline."""
    if length is not None and length.strip().isdigit() and int(length) > max_body:
        return None, BodyProblem.TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in pieces:
            size += len(chunk)
            if size > max_body:
                return None, BodyProblem.TOO_LARGE
            chunks.append(chunk)
            if deadline.expired or deadline.remaining() <= 0:
                return None, BodyProblem.DEADLINE
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError, zlib.error) as e:
        log.debug("reading a provider answer failed: %s", type(e).__name__)
        return None, BodyProblem.DEADLINE if deadline.expired else BodyProblem.BROKEN
    if deadline.expired:
        return None, BodyProblem.DEADLINE
    return b"".join(chunks), None


def _chunks(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    yield from resp.stream(_CHUNK, decode_content=True)


def _pieces(answer: http.client.HTTPResponse) -> Iterator[bytes]:
    """An http.client answer's body as it arrives, decoded as urllib3 decodes it (gzip and
    deflate; another coding as it is), never more than :data:`_CHUNK` bytes a piece: a
    small compressed body cannot expand past the cap in one step."""
    coding = (answer.getheader("content-encoding") or "").strip().lower()
    raw = iter(lambda: answer.read(_CHUNK), b"")
    if coding in ("gzip", "x-gzip"):
        yield from _inflated(raw, zlib.decompressobj(16 + zlib.MAX_WBITS))
    elif coding == "deflate":
        first = next(raw, b"")
        try:  # zlib-wrapped, as the RFC says; else raw deflate, as some servers send
            zlib.decompressobj().decompress(first, 1)
            inflater = zlib.decompressobj()
        except zlib.error:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        yield from _inflated(itertools.chain((first,), raw), inflater)
    else:
        yield from raw


def _inflated(raw: Iterator[bytes], inflater: Any) -> Iterator[bytes]:
    for chunk in raw:
        while chunk:
            out = inflater.decompress(chunk, _CHUNK)
            if out:
                yield out
            chunk = inflater.unconsumed_tail
    tail = inflater.flush()
    if tail:
        yield tail


def _fetch_direct(direct: Direct, method: str, url: str, *, body: bytes | None, headers: Mapping[str, str],
                  budget: Deadline, connect: float, read: float, max_body: int) -> Answer:
    """:func:`fetch`'s call over a kept-alive http.client connection (no proxy between)."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = direct.take(connect)
    started = time.monotonic()
    try:
        Direct.send(conn, method, target, body=body, headers=headers, read=read)
        answer = conn.getresponse()
    except (http.client.HTTPException, OSError, ValueError) as e:
        # ValueError: e.g. a header value http.client refuses (its message holds the value).
        conn.close()
        if budget.expired:
            raise NoAnswer(NoAnswerKind.DEADLINE, type(e).__name__) from None
        if isinstance(e, ssl.SSLError):
            raise NoAnswer(NoAnswerKind.TLS, type(e).__name__) from None
        if isinstance(e, http.client.InvalidURL):
            raise NoAnswer(NoAnswerKind.REFUSED_URL, type(e).__name__) from None
        raise NoAnswer(NoAnswerKind.UNREACHABLE, type(e).__name__) from None
    except BaseException:
        conn.close()
        raise
    elapsed = time.monotonic() - started
    whole = False
    try:
        answer_headers = {name.lower(): value for name, value in answer.msg.items()}
        if budget.expired:  # the header block may have been cut short
            return Answer(answer.status, answer_headers, None, BodyProblem.DEADLINE, elapsed)
        if 300 <= answer.status < 400:
            return Answer(answer.status, answer_headers, None, elapsed=elapsed)
        content, problem = _read_chunks(answer_headers.get("content-length"), _pieces(answer),
                                        deadline=budget, max_body=max_body)
        whole = problem is None and answer.isclosed() and not answer.will_close
        return Answer(answer.status, answer_headers, content, problem, elapsed)
    finally:
        if whole:
            direct.give_back(conn)
        else:
            conn.close()  # a body cut short, or a redirect's unread one


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic (RFC 7617; latin-1 as requests sent it,
    UTF-8 for what latin-1 cannot say)."""
    raw = f"{user}:{password}"
    try:
        encoded = raw.encode("latin-1")
    except UnicodeEncodeError:
        encoded = raw.encode("utf-8")
    return "Basic " + base64.b64encode(encoded).decode("ascii")


def _refused(url: str) -> str | None:
    """Why ``url`` is not sent to (None: it may be)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError:
        return "InvalidURL"
    if parts.scheme.lower() != "https":
        return "InvalidSchema"
    if not parts.hostname:
        return "InvalidURL"
    return None


def _tls_failure(e: BaseException) -> bool:
    if isinstance(e, urllib3.exceptions.ProxyError):
        return isinstance(e.original_error, urllib3.exceptions.SSLError | ssl.SSLError)
    return isinstance(e, urllib3.exceptions.SSLError | ssl.SSLError)


def fetch(
    pool: Pool,
    method: str,
    url: str,
    *,
    deadline: float,
    connect_timeout: float,
    read_timeout: float,
    max_body: int = MAX_BODY,
    headers: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
    body: bytes | None = None,
    auth: tuple[str, str] | None = None,
) -> Answer:
    """One bounded request: no redirects followed, no cookies, at most ``max_body`` bytes read,
    all of it within ``deadline`` seconds. ``form`` is sent form-encoded (or ``body`` as it
    is), ``auth`` as HTTP Basic. Raises :class:`NoAnswer` when no status line came back."""
    refused = _refused(url)
    if refused is not None:
        raise NoAnswer(NoAnswerKind.REFUSED_URL, refused)
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    if form is not None:
        body = urllib.parse.urlencode(form).encode("ascii")
        if not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/x-www-form-urlencoded"
    if auth is not None:
        sent["Authorization"] = basic_auth(*auth)
    with Deadline(deadline) as budget:
        left = budget.remaining()
        direct = pool.direct_for(url)
        if direct is not None:
            return _fetch_direct(direct, method, url, body=body, headers=sent, budget=budget,
                                 connect=min(connect_timeout, left), read=min(read_timeout, left),
                                 max_body=max_body)
        timeout = urllib3.Timeout(connect=min(connect_timeout, left), read=min(read_timeout, left))
        started = time.monotonic()
        try:
            resp = pool.manager_for(url).urlopen(method, url, body=body, headers=sent, timeout=timeout,
                                                 retries=False, redirect=False, preload_content=False,
                                                 decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError, ValueError, ssl.SSLError) as e:
            # ValueError: e.g. a header value http.client refuses (its message holds the value).
            if budget.expired:
                raise NoAnswer(NoAnswerKind.DEADLINE, type(e).__name__) from None
            if _tls_failure(e):
                raise NoAnswer(NoAnswerKind.TLS, type(e).__name__) from None
            if isinstance(e, urllib3.exceptions.LocationValueError):
                raise NoAnswer(NoAnswerKind.REFUSED_URL, type(e).__name__) from None
            raise NoAnswer(NoAnswerKind.UNREACHABLE, type(e).__name__) from None
        elapsed = time.monotonic() - started
        try:
            answer_headers = _lower(resp.headers)
            if budget.expired:  # the header block may have been cut short
                return Answer(resp.status, answer_headers, None, BodyProblem.DEADLINE, elapsed)
            if 300 <= resp.status < 400:
                return Answer(resp.status, answer_headers, None, elapsed=elapsed)
            content, problem = _read_body(resp, deadline=budget, max_body=max_body)
            return Answer(resp.status, answer_headers, content, problem, elapsed)
        finally:
            _release(resp)


def _release(resp: urllib3.BaseHTTPResponse) -> None:
    """A connection whose body was read whole goes back to the pool; one cut short (or a
    redirect's unread body) is closed."""
    try:
        if not resp.closed:
            resp.close()
        resp.release_conn()
    except (urllib3.exceptions.HTTPError, OSError):
        pass


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

