"""The command without the ``operator`` extra (what a workspace image installs): every
command but ``run`` works, and ``run`` says which extra it needs, in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import slim

CLOSED = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: ws}}]
current-context: c
"""


def test_the_operators_dependencies_are_outside_the_base_install() -> None:
    """What the slim runs below block is really what the operator needs (else they prove nothing)."""
    assert {"kopf", "prometheus_client", "requests_oauthlib", "oauthlib"} <= slim.blocked_modules()


@pytest.mark.parametrize(("args", "code", "out"), [
    pytest.param(["--help"], 0, "exit codes:", id="help"),
    pytest.param(["completion", "bash"], 0, "complete -o bashdefault", id="a completion script"),
    pytest.param(["__complete", "login", "--flow", ""], 0, "auto\ndevice\npkce\n:4", id="one TAB"),
    pytest.param(["status", "--kubeconfig", "{closed}"], 1, "cannot reach the Kubernetes API server",
                 id="status gets as far as the cluster"),
    pytest.param(["login", "gh", "--kubeconfig", "{closed}"], 1, "cannot reach the Kubernetes API server",
                 id="login gets as far as the cluster"),
    pytest.param(["refresh", "gh", "--wait", "--kubeconfig", "{closed}"], 1, "cannot reach the Kubernetes API server",
                 id="refresh gets as far as the cluster"),
    pytest.param(["-n", "ws", "--kubeconfig", "{closed}", "token", "gh"], 1, "cannot reach the Kubernetes API server",
                 id="token, with the flags before the command, gets as far as the cluster"),
    pytest.param(["logout", "gh", "--kubeconfig", "{closed}"], 1, "cannot reach the Kubernetes API server",
                 id="logout gets as far as the cluster"),
    pytest.param(["run", "--kubeconfig", "{closed}"], 1,
                 "needs the operator's dependencies (kopf is not installed): "
                 "pip install 'externalauth-operator[operator]'", id="run names the extra it needs"),
])
def test_without_the_operator_extra(tmp_path: Path, args: list[str], code: int, out: str) -> None:
    closed = tmp_path / "closed.kubeconfig"
    closed.write_text(CLOSED)
    r = subprocess.run(slim.command(*[a.replace("{closed}", str(closed)) for a in args]), capture_output=True,
                       text=True, timeout=60)
    assert (code, True, False) == (r.returncode, out in r.stdout + r.stderr, "Traceback" in r.stderr), r.stderr


def test_git_credential_answers_without_the_operator_extra(tmp_path: Path) -> None:
    """The helper in a workspace image with only the base install: the token from the files."""
    (tmp_path / "access_token").write_text("gho_abc")
    (tmp_path / "git-credentials").write_text("https://x-access-token:gho_abc@github.com\n")
    r = subprocess.run(slim.command("git-credential", "--secret-dir", str(tmp_path), "get"), capture_output=True,
                       text=True, timeout=60, input="protocol=https\nhost=github.com\n\n")
    assert (0, "username=x-access-token\npassword=gho_abc\n") == (r.returncode, r.stdout), r.stderr
