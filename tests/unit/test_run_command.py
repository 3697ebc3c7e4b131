"""`externalauth run` refuses bad input in one line, before kopf starts (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLOSED = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def externalauth(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "externalauth"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--kubeconfig", "/nonexistent"], "does not exist", id="a kubeconfig that does not exist"),
    pytest.param(["--kubeconfig", "{closed}"], "cannot reach the Kubernetes API server", id="an unreachable cluster"),
    pytest.param(["--kubeconfig", "{closed}", "--context", "nope"], "no context 'nope'", id="an unknown context"),
    pytest.param(["--metrics-port", "99999"], "not a port number", id="a port out of range"),
    pytest.param(["--kubeconfig", "{closed}", "--peering", "p"], "--peering p is not supported",
                 id="kopf peering: it would pause kopf's watch only, and every replica is active"),
    pytest.param(["--validation-interval", "often"], "not a duration", id="a bad duration"),
    pytest.param(["-n", "a", "-A"], "not allowed with", id="a namespace and all namespaces"),
    pytest.param(["--metrics-bind-address", "a b"], "not an IP address or a host name",
                 id="a metrics bind address with a space"),
    pytest.param(["--metrics-bind-address", ":8080", "--metrics-port", "9000"], "give the port once",
                 id="two different metrics ports"),
])
def test_run_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    closed = tmp_path / "closed.kubeconfig"
    closed.write_text(CLOSED)
    result = externalauth("run", *[a.replace("{closed}", str(closed)) for a in args])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert 1 == len([line for line in result.stderr.splitlines() if line.startswith("externalauth")])
