"""A real HTTP CONNECT proxy on loopback (threads and sockets), as a corporate proxy would be:
it tunnels TLS it cannot read. On demand it trickles bytes, to show that a call's deadline
holds against a slow proxy as well as a slow server.

    with ConnectProxy() as proxy:
        env HTTPS_PROXY=proxy.url ...
        proxy.tunnels  # the "host:port" of every CONNECT it served
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class ConnectProxy:
    """``trickle_connect``: seconds between the bytes of its ``200 Connection established``
    answer; ``trickle_tunnel``: seconds between bytes passed from the server to the client
    (None: at full speed)."""

    def __init__(self, *, trickle_connect: float | None = None, trickle_tunnel: float | None = None) -> None:
        self.trickle_connect = trickle_connect
        self.trickle_tunnel = trickle_tunnel
        self.tunnels: list[str] = []
        self.refused: list[str] = []  # request lines that were not CONNECT
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="connect-proxy", daemon=True).start()

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._serve, args=(client,), name="connect-proxy-client", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = line.partition(" ")
            target = rest.split(" ", 1)[0]
            if method != "CONNECT":
                self.refused.append(line)
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            upstream.settimeout(None)
            self._keep(upstream)
            self.tunnels.append(target)
            self._send(client, b"HTTP/1.1 200 Connection established\r\n\r\n", self.trickle_connect)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            self._pump(upstream, client, self.trickle_tunnel)
        except OSError:
            pass
        finally:
            _close(client)

    def _send(self, sock: socket.socket, data: bytes, trickle: float | None) -> None:
        if trickle is None:
            sock.sendall(data)
            return
        for i in range(len(data)):
            if self._closed.is_set():
                return
            sock.sendall(data[i:i + 1])
            time.sleep(trickle)

    def _pump(self, source: socket.socket, sink: socket.socket, trickle: float | None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self._send(sink, data, trickle)
        except OSError:
            pass
        finally:
            _close(sink)
            _close(source)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
