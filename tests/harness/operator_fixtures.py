"""Run the real operator (``externalauth run``) as a subprocess against the test control plane."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

STARTED = "externalauth operator started"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``externalauth run`` as a subprocess. ``kubeconfig=None`` passes no ``--kubeconfig`` and
    drops ``KUBECONFIG`` from its environment (a pod's in-cluster configuration, given in ``env``)."""

    def __init__(self, *, kubeconfig: str | None, namespaces: list[str], log_path: Path,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.metrics_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        exe = shutil.which("externalauth", path=str(Path(sys.executable).parent))
        base = [exe] if exe else [sys.executable, "-m", "externalauth.cli.main"]
        cmd = [*base, "run", "--standalone", "--metrics-port", str(self.metrics_port), "--debug"]
        if self.kubeconfig is not None:
            cmd += ["--kubeconfig", self.kubeconfig]
        for ns in self.namespaces:
            cmd += ["-n", ns]
        if self.namespaces and "--operator-namespace" not in self.extra_args:
            # The tests keep client Secrets in the served namespace: it is the operator's own.
            cmd += ["--operator-namespace", self.namespaces[0]]
        return cmd + list(self.extra_args)

    def start(self, *, timeout: float = 60.0) -> OperatorProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.kubeconfig is None:
            env.pop("KUBECONFIG", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while STARTED not in self.logs():
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"operator did not start within {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.1)
        return self

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 90.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
OPERATOR_USER = "externalauth-operator-under-test"


def least_privileged_kubeconfig(control_plane: Any, user: str) -> Path:
    """A kubeconfig for ``user`` bound to exactly the ClusterRole of ``deploy/rbac.yaml``
    (contract §9.9). Used by the tests and the benchmarks (no pytest needed)."""
    role = operator_cluster_role()
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    path: Path = control_plane.mint_user(user)
    return path


def operator_cluster_role() -> dict[str, Any]:
    """The ClusterRole of ``deploy/rbac.yaml``."""
    role: dict[str, Any] = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "ClusterRole")
    return role


def least_privileged_service_account(control_plane: Any, *, namespace: str, name: str) -> None:
    """A ServiceAccount ``namespace/name`` bound to exactly the ClusterRole of ``deploy/rbac.yaml``,
    as the operator's pod runs (mint its tokens with :func:`service_account_token`)."""
    role = operator_cluster_role()
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{namespace}-{name}"[:253]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, account, binding]))


def service_account_token(control_plane: Any, *, namespace: str, name: str, bound_secret: str,
                          duration: str = "1h") -> str:
    """A TokenRequest token for ServiceAccount ``namespace/name``, bound to the Secret
    ``bound_secret`` of that namespace (created if missing): deleting that Secret revokes it,
    as deleting a pod revokes its projected token."""
    control_plane.kubectl("create", "secret", "generic", bound_secret, "-n", namespace, check=False)
    token: str = control_plane.kubectl(
        "create", "token", name, "-n", namespace, "--duration", duration,
        "--bound-object-kind", "Secret", "--bound-object-name", bound_secret).stdout.strip()
    return token


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: Any) -> Path:
    """The operator under test has the permissions a user installs, no more."""
    return least_privileged_kubeconfig(control_plane, OPERATOR_USER)


@pytest.fixture
def make_operator(request: pytest.FixtureRequest, operator_kubeconfig: Path,
                  tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators (as the least-privileged operator user unless ``kubeconfig=`` says otherwise;
    ``None``: the in-cluster configuration given in ``env``): ``make_operator(namespaces=[ns],
    extra_args=(...))``; all are stopped at teardown, their logs printed when the test failed."""
    started: list[OperatorProcess] = []

    def make(*, namespaces: list[str], extra_args: tuple[str, ...] = (),
             env: dict[str, str] | None = None, start: bool = True,
             kubeconfig: str | Path | None = operator_kubeconfig) -> OperatorProcess:
        op = OperatorProcess(kubeconfig=None if kubeconfig is None else str(kubeconfig),
                             namespaces=namespaces,
                             log_path=tmp_path / f"operator-{len(started)}.log",
                             extra_args=extra_args, env=env)
        started.append(op)
        return op.start() if start else op

    yield make
    for op in started:
        op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for i, op in enumerate(started):
            sys.stderr.write(f"\n----- operator {i} log (tail) -----\n{op.logs()[-6000:]}\n")


@pytest.fixture
def operator(make_operator: Callable[..., OperatorProcess], namespace: str) -> OperatorProcess:
    """One operator serving the test's namespace."""
    return make_operator(namespaces=[namespace])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
