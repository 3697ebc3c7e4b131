"""The API server's short requests (all but watches) over kept-alive http.client
connections (kube/connection.py ``_Direct``), against the real control plane: one
connection serves request after request, one the server closed is not used again, and an
answer that is cut or malformed is a translated error, never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from externalauth.errors import TransientError
from externalauth.kube import api, connection


def direct_of(client: connection.Connection) -> Any:
    held = client._pool
    assert held is not None and held[1].direct is not None, "a direct connection to the API server"
    return held[1].direct


def test_one_kept_alive_connection_serves_request_after_request(kubeconfig: Path) -> None:
    client = connection.connect(kubeconfig=str(kubeconfig))
    kube = api.Kube(client)
    sockets = set()
    for _ in range(20):
        assert kube.get_secret("default", "absent") is None
        ((idle, _),) = direct_of(client)._idle
        sockets.add(id(idle.sock))
    client.close()
    assert 1 == len(sockets)


def test_a_connection_the_server_closed_is_not_used_again(kubeconfig: Path) -> None:
    """The server may close a kept-alive connection while it waits in the pool (an idle
    timeout, a restart): the next request takes a new one instead of failing."""
    client = connection.connect(kubeconfig=str(kubeconfig))
    kube = api.Kube(client)
    direct_of(client).stale_after = 0.0  # else only a connection idle for a second is checked
    assert kube.get_secret("default", "absent") is None
    ((idle, _),) = direct_of(client)._idle
    socket.socket.shutdown(idle.sock, socket.SHUT_RD)  # reads now see the end, as after the server's close
    assert kube.get_secret("default", "absent") is None
    ((fresh, _),) = direct_of(client)._idle
    client.close()
    assert fresh is not idle


@pytest.fixture
def broken_server(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A plain-http server on loopback that answers each connection with the next scripted
    bytes, then closes it; and a kubeconfig that points at it."""
    answers: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answers.pop(0) if answers else b"")

    threading.Thread(target=serve, daemon=True).start()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
    }))
    yield path, answers
    listener.close()


@pytest.mark.parametrize("answer", [
    pytest.param(b"", id="the connection closed before any answer"),
    pytest.param(b"garbage\r\n\r\n", id="a status line that is not HTTP"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"kind\":", id="a body cut short"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="a chunk size that is not hex"),
])
def test_an_answer_cut_or_malformed_is_a_transient_error(broken_server: tuple[Path, list[bytes]],
                                                         answer: bytes) -> None:
    path, answers = broken_server
    answers.append(answer)
    client = connection.connect(kubeconfig=str(path))
    with pytest.raises(TransientError, match="cannot reach the Kubernetes API server"):
        api.Kube(client).get_secret("default", "s")
    client.close()
