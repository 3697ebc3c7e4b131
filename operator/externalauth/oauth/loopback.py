"""The loopback redirect of a native app's sign-in (RFC 8252 §7.3, §8.3). I/O: a socket.

:class:`LoopbackReceiver` listens on ``127.0.0.1`` (the literal address, never
``localhost``, which a resolver could point elsewhere) on an ephemeral port chosen by the
kernel; its redirect URI is ``http://127.0.0.1:PORT/callback``. It answers requests one
at a time until the first ``GET /callback`` arrives (anything else, a favicon say, gets a
404 and does not count) whose ``state`` is ours (one with another state is answered 400 and
ignored: a local process cannot end the sign-in by forging the redirect), shows the user a
short page that echoes nothing from the request, and closes the listener: one callback is
served, never two.
"""

from __future__ import annotations

import socketserver
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from externalauth.oauth.pkce import Callback, read_callback

CALLBACK_PATH = "/callback"
HOST = "127.0.0.1"
#: Seconds a connected client may take to send its request (a stuck local client must not
#: freeze the countdown for long).
REQUEST_TIMEOUT = 5.0
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>externalauth</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>{title}</h1><p>{text}</p>
</body></html>
"""


class _Server(HTTPServer):
    callback: Callback | None = None
    state: str = ""
    ignored: int = 0  # callbacks with another state, not taken

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can wait on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "externalauth"
    sys_version = ""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != CALLBACK_PATH or self.server.callback is not None:
            self._page(404, "Not found", "This is the sign-in callback of externalauth.")
            return
        callback = read_callback(url.query, state=self.server.state)
        if callback.error == "state_mismatch":
            # Not our sign-in: an old tab, or another local process forging the redirect
            # (security review finding 9). Ignored; the listener keeps waiting for ours.
            self.server.ignored += 1
            self._page(400, "Not this sign-in", "This page does not belong to the sign-in in progress.")
            return
        self.server.callback = callback
        if callback.code is not None:
            self._page(200, "Signed in", "You can close this tab and return to the terminal.")
        else:
            self._page(400, "Sign-in failed", "Return to the terminal to see why.")

    def do_POST(self) -> None:
        self._page(405, "Method not allowed", "")

    def _page(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=title, text=text).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the query holds the code: never logged


class LoopbackReceiver:
    """Listens at once (so the redirect URI is known before the browser opens)."""

    def __init__(self, *, state: str, host: str = HOST) -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.state = state
        self.port = int(self._server.server_address[1])
        self.redirect_uri = f"http://{host}:{self.port}{CALLBACK_PATH}"

    def __repr__(self) -> str:
        return f"LoopbackReceiver({self.redirect_uri!r})"

    @property
    def ignored(self) -> int:
        """Callbacks that came with another state and were ignored."""
        return self._server.ignored

    def wait(self, *, seconds: float, tick: Callable[[], None] = lambda: None,
             clock: Callable[[], float] = time.monotonic) -> Callback | None:
        """Serve requests until the callback arrives (returned) or ``seconds`` pass (None).
        ``tick`` runs about once a second, for a countdown. The listener is closed either way."""
        deadline = clock() + seconds
        try:
            while self._server.callback is None:
                left = deadline - clock()
                if left <= 0:
                    return None
                tick()
                self._server.timeout = min(1.0, left)
                self._server.handle_request()
            return self._server.callback
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._server.server_close()
        except OSError:
            pass

