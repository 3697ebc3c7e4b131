"""The HTTPS server in front of ``Provider`` (I/O: sockets, TLS, sleeping for faults).

A ``ThreadingHTTPServer`` (one daemon thread per connection, HTTP/1.1
keep-alive, a deep accept queue) whose listening socket is wrapped with TLS.
The handshake runs in the connection's own thread so a slow or hostile client
never stalls the accept loop. The access log shows method, path (no query
string) and status only: never a token.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from providersim import authorize, gitserving
from providersim.profiles import Route
from providersim.provider import (
    DEVICE_GRANT_TYPE,
    Endpoint,
    FaultKind,
    Mode,
    Provider,
    Reply,
    Request,
)

logger = logging.getLogger("providersim")

MALFORMED_BODY = b'<html><body><h1>Unicorn!</h1> {"access_token": \x00\xff garbage'
HUGE_CHUNK = 64 * 1024


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        provider: Provider,
        ssl_context: ssl.SSLContext,
        base_latency: Callable[[], float],
        authorizer: authorize.Authorizer | None = None,
        git_repos: gitserving.GitRepos | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.provider = provider
        self.authorizer = authorizer or authorize.Authorizer(
            provider, path=authorize.authorize_path(provider.dialect.token_path)
        )
        self.git_repos = git_repos
        self.base_latency = base_latency
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)
        self.socket = ssl_context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which may wait on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Cut open keep-alive connections so nothing is answered after stop()."""
        with self._connections_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS failures (an untrusted client hanging up) and resets are expected.
        logger.debug("connection error from %s", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "providersim/1"
    sys_version = ""
    timeout = 60
    server: SimServer
    trickle: float | None = None  # seconds between bytes of this answer (a trickle fault)

    def setup(self) -> None:
        # Headers and body go out as separate writes: without NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every keep-alive answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()
        self.server.track(self.request, add=True)

    def finish(self) -> None:
        self.server.track(self.request, add=False)
        try:
            super().finish()
        except OSError:
            pass

    # -- logging: method, path and status only
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        logger.info("%s %s %s", getattr(self, "command", "-"), path, code)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the simulator's clock (which a test may set apart)."""
        moment = self.server.provider.clock() if timestamp is None else timestamp
        return email.utils.formatdate(moment, usegmt=True)

    # -- verbs
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- dispatch
    def _dispatch(self) -> None:
        self.trickle = None
        url = urlsplit(self.path)
        raw = self._read_body()
        if raw is None:
            return
        path = url.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            self._control(path, raw)
            return
        provider = self.server.provider
        provider.count_request()
        if path.startswith(gitserving.PREFIX) and self.server.git_repos is not None:
            self._git(url.path, url.query, raw)
            return
        route = provider.dialect.route(self.command, path)
        if route is Route.TOKEN:
            params = self._params(url.query, raw)
            if params is None:
                return
            device = params.get("grant_type") == DEVICE_GRANT_TYPE
            endpoint = Endpoint.DEVICE_TOKEN if device else Endpoint.TOKEN
            code = params.get("grant_type") == authorize.AUTHORIZATION_CODE
            answer = self.server.authorizer.token if code else provider.token
            self._simulate(endpoint, answer, params, path)
        elif path == self.server.authorizer.path and self.command in ("GET", "POST"):
            params = self._params(url.query, raw)
            if params is None:
                return
            page = self.server.authorizer.authorize(self.command, params)
            self._send(page.status, page.body, page.content_type, page.headers)
        elif route is Route.VALIDATE:
            self._simulate(Endpoint.VALIDATE, provider.validate, {}, path)
        elif route is Route.DEVICE_CODE:
            params = self._params(url.query, raw)
            if params is None:
                return
            self._simulate(Endpoint.DEVICE_CODE, provider.device_code, params, path)
        elif route is Route.DEVICE_PAGE:
            page = b"<html><body>providersim: approve the user code with POST /_sim/device/approve"
            self._send(200, page, "text/html; charset=utf-8")
        elif route is Route.DISCOVERY:
            self._send_reply(provider.discovery(Request(headers={}, params={}, path=path)))
        elif route is Route.REVOKE:
            params = self._params(url.query, raw)
            if params is None:
                return
            self._simulate(Endpoint.REVOKE, provider.revoke, params, path)
        else:
            self._send_json(404, {"message": "Not Found"})

    def _simulate(
        self,
        endpoint: Endpoint,
        answer: Callable[[Request], Reply],
        params: Mapping[str, str],
        path: str,
    ) -> None:
        provider = self.server.provider
        provider.count_call(endpoint)
        faults = provider.take_faults(endpoint)
        delay = self.server.base_latency() + sum(
            float(f.value) for f in faults if f.kind is FaultKind.LATENCY
        )
        if delay > 0:
            time.sleep(delay)
        self.trickle = next((float(f.value) for f in faults if f.kind is FaultKind.TRICKLE), None)
        for fault in faults:
            if fault.kind is FaultKind.DROP:
                provider.record_status(endpoint, "drop")
                self.close_connection = True
                try:
                    self.request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault.kind is FaultKind.LOST_ANSWER:
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer(Request(headers=headers, params=params))  # the provider acts on it ...
                provider.record_status(endpoint, "lost")
                self.close_connection = True  # ... and the answer never arrives
                try:
                    self.request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault.kind is FaultKind.STATUS:
                status = int(fault.value)
                provider.record_status(endpoint, status)
                body: dict[str, Any] = (
                    {"message": "Server Error", "documentation_url": "https://docs.github.com"}
                    if endpoint is Endpoint.VALIDATE
                    else {"error": "server_error", "error_description": "injected fault"}
                )
                self._send_json(status, body, fault.headers)
                return
            if fault.kind is FaultKind.MALFORMED:
                provider.record_status(endpoint, 200)
                self._send(200, MALFORMED_BODY, "text/html; charset=utf-8")
                return
            if fault.kind is FaultKind.REDIRECT:
                provider.record_status(endpoint, int(fault.value))
                self._send(int(fault.value), b"", "text/plain; charset=utf-8", fault.headers)
                return
            if fault.kind is FaultKind.BODY:
                provider.record_status(endpoint, 200)
                self._send(200, json.dumps(fault.value).encode(), "application/json; charset=utf-8")
                return
            if fault.kind is FaultKind.HUGE:
                provider.record_status(endpoint, 200)
                self._send_huge(int(fault.value))
                return
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = answer(Request(headers=headers, params=params, path=path))
        provider.record_status(endpoint, reply.status)
        self._send_reply(reply)

    def _git(self, path: str, query: str, raw: bytes) -> None:
        assert self.server.git_repos is not None
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = gitserving.serve(
            gitserving.GitRequest(self.command, path, query, headers, raw),
            repos=self.server.git_repos,
            token_is_live=self.server.provider.access_token_live,
        )
        content_type = answer.headers.pop("content-type", "application/octet-stream")
        self._send(answer.status, answer.body, content_type, answer.headers)

    def _control(self, path: str, raw: bytes) -> None:
        try:
            data = json.loads(raw) if raw.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if path.startswith("/_sim/git/") and self.server.git_repos is not None:
                status, payload = gitserving.control(self.server.git_repos, self.command, path, data)
            else:
                status, payload = control(self.server.provider, self.command, path, data)
        except (KeyError, ValueError, TypeError, gitserving.GitError) as e:
            status, payload = 400, {"error": str(e)}
        self._send_json(status, payload)

    # -- request parsing
    def _read_body(self) -> bytes | None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("content-length")
        try:
            n = int(length) if length else 0
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"error": "invalid_request"})
            return None
        return self.rfile.read(n) if n > 0 else b""

    def _read_chunked(self, limit: int = 64 * 1024 * 1024) -> bytes | None:
        """A chunked request body (git sends one when a fetch negotiation is large)."""
        body = bytearray()
        try:
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                if len(body) + size > limit:
                    raise ValueError("body too large")
                body += self.rfile.read(size)
                self.rfile.readline(1024)
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"error": "invalid_request"})
            return None

    def _params(self, query: str, raw: bytes) -> dict[str, str] | None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                params.update({str(k): str(v) for k, v in body.items() if v is not None})
            else:
                params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            self._send_json(
                400, {"error": "invalid_request", "error_description": "unparseable body"}
            )
            return None
        return params

    # -- answers
    def _send_reply(self, reply: Reply) -> None:
        accept = self.headers.get("accept", "")
        provider = self.server.provider
        if reply.text is not None:
            self._send(reply.status, reply.text.encode(), "text/html; charset=utf-8", reply.headers)
        elif reply.negotiable and provider.mode is Mode.GITHUB and "json" not in accept.lower():
            body = urlencode({k: str(v) for k, v in reply.payload.items()}).encode()
            self._send(
                reply.status,
                body,
                "application/x-www-form-urlencoded; charset=utf-8",
                reply.headers,
            )
        else:
            self._send_json(reply.status, reply.payload, reply.headers)

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _send_huge(self, size: int) -> None:
        """HTTP 200 with a JSON body of ``size`` bytes, generated chunk by chunk (never held
        whole); stops when the client hangs up."""
        head, tail = b'{"login": "', b'"}'
        filler = max(0, size - len(head) - len(tail))
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(head) + filler + len(tail)))
            self.end_headers()
            self.wfile.write(head)
            chunk = b"a" * HUGE_CHUNK
            while filler > 0:
                self.wfile.write(chunk[: min(filler, HUGE_CHUNK)])
                filler -= HUGE_CHUNK
            self.wfile.write(tail)
        except OSError:
            pass

    def _send_slowly(self, raw: bytes, interval: float) -> None:
        """The whole answer, status line included, one byte every ``interval`` seconds."""
        self.close_connection = True
        try:
            for i in range(len(raw)):
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
                time.sleep(interval)
        except OSError:
            pass

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self.trickle is not None:
            lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                     f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                     "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
            self.log_request(status)
            self._send_slowly(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, self.trickle)
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


def control(provider: Provider, method: str, path: str, data: Mapping[str, Any]) -> tuple[int, Any]:
    """The ``/_sim/...`` control API, for a simulator running in its own process."""
    route = (method, path)
    if route == ("GET", "/_sim/stats"):
        return 200, provider.stats().as_dict()
    if route == ("POST", "/_sim/reset-stats"):
        provider.reset_stats()
        return 200, {}
    if route == ("POST", "/_sim/clients"):
        provider.register_client(str(data["client_id"]), data.get("client_secret"))
        return 201, {"client_id": data["client_id"]}
    if route == ("POST", "/_sim/client-secret"):
        provider.set_client_secret(str(data["client_id"]), data.get("client_secret"))
        return 200, {}
    if route == ("POST", "/_sim/grants"):
        grant = provider.issue_grant(
            str(data["client_id"]),
            login=str(data.get("login", "alice")),
            scope=str(data.get("scope", "repo")),
        )
        return 201, grant.as_dict()
    if route == ("POST", "/_sim/revoke"):
        return 200, {"revoked": provider.revoke_grant(str(data["token"]))}
    if route == ("POST", "/_sim/expire"):
        return 200, {"expired": provider.expire_access_token(str(data["access_token"]))}
    if route == ("POST", "/_sim/faults"):
        provider.add_fault(
            data["endpoint"],
            data["kind"],
            count=data.get("count"),
            value=data.get("value"),
            headers=data.get("headers"),
        )
        return 201, {}
    if route == ("DELETE", "/_sim/faults"):
        provider.clear_faults()
        return 200, {}
    if route == ("POST", "/_sim/rate-limit"):
        provider.set_rate_limit(
            data.get("kind"), count=data.get("count"), reset_after=int(data.get("reset_after", 60)),
            duration=data.get("duration"), endpoint=data.get("endpoint", "validate"),
        )
        return 200, {}
    if route == ("POST", "/_sim/device/approve"):
        provider.approve_device(str(data["user_code"]), login=str(data.get("login", "alice")))
        return 200, {}
    if route == ("POST", "/_sim/device/deny"):
        provider.deny_device(str(data["user_code"]))
        return 200, {}
    return 404, {"error": f"no control endpoint {method} {path}"}
