"""pytest plugin: a real control plane (kube-apiserver + etcd) for ``tests/integration``.

Fixtures: ``control_plane`` (session), ``kubeconfig``, ``k8s_api``, ``core_v1``,
``custom_objects``, ``kubectl`` (session) and ``namespace`` (per test).

* Every test under ``tests/integration/`` is marked ``integration``.
* The binaries are located/built once, at the end of collection, and only when
  an integration test was selected (outside any per-test timeout, with the
  build's progress on the terminal). The control plane starts lazily, the first
  time a test asks for it.
* If it cannot be built or started, integration tests ERROR with the tail of
  both server logs and of the build log. They are never skipped, except with
  ``EXTERNALAUTH_SKIP_INTEGRATION=1`` (an explicit, loudly reported opt-out).
* When an integration test fails, the tail of both server logs is added to
  its report.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.binaries import Binaries, BuildError, locate_binaries
from tests.harness.controlplane import ControlPlane, ControlPlaneError

SKIP_ENV = "EXTERNALAUTH_SKIP_INTEGRATION"
#: Tiers that need the real control plane: every test under them is marked ``integration``.
RUNTIME_DIRS = tuple(Path(__file__).resolve().parents[1] / tier for tier in ("integration", "reliability"))

_BINARIES = pytest.StashKey[Binaries]()
_BUILD_ERROR = pytest.StashKey[str]()
_CONTROL_PLANE = pytest.StashKey[ControlPlane]()


def _skipping() -> bool:
    return os.environ.get(SKIP_ENV, "") not in ("", "0")


def _skip_reason() -> str:
    return (
        f"{SKIP_ENV}=1: integration tests against the real kube-apiserver were NOT run; "
        "nothing about 409 Conflicts, CRD validation or RBAC has been verified"
    )


# -- collection --------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in Path(str(item.path)).resolve().parents for d in RUNTIME_DIRS):
            item.add_marker(pytest.mark.integration)
        if _skipping() and item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.skip(reason=_skip_reason()))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Locate or build the binaries now, before any per-test timeout starts."""
    if _skipping() or session.config.option.collectonly:
        return
    if not any(i.get_closest_marker("integration") for i in session.items):
        return
    config = session.config
    capman = config.pluginmanager.getplugin("capturemanager")
    print("\n[control-plane] locating kube-apiserver/etcd/kubectl ...", file=sys.stderr)
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                config.stash[_BINARIES] = locate_binaries(stream=sys.stderr)
        else:
            config.stash[_BINARIES] = locate_binaries(stream=sys.stderr)
    except BuildError as e:
        config.stash[_BUILD_ERROR] = str(e)
    except OSError as e:
        config.stash[_BUILD_ERROR] = f"could not run the build script: {e}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _skipping():
        terminalreporter.write_sep("!", "INTEGRATION TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_skip_reason(), red=True)
    cp = config.stash.get(_CONTROL_PLANE, None)
    if cp is not None and cp.startup_seconds is not None:
        terminalreporter.write_line(
            f"[control-plane] started in {cp.startup_seconds:.1f}s at {cp.server} "
            f"(binaries: {cp.bin_dir})"
        )


# -- failure reports ---------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and item.get_closest_marker("integration"):
        cp = item.config.stash.get(_CONTROL_PLANE, None)
        if cp is not None and cp.dir is not None:
            report.sections.append(("control-plane logs (tail)", cp.log_tail(40)))
    return report


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """kube-apiserver + etcd with the CRDs applied; started once per session."""
    if _skipping():
        pytest.skip(_skip_reason())
    config = request.config
    if _BUILD_ERROR in config.stash:
        pytest.fail(
            "the control plane binaries could not be built or found:\n"
            + config.stash[_BUILD_ERROR],
            pytrace=False,
        )
    binaries = config.stash.get(_BINARIES, None)
    cp = ControlPlane(binaries=binaries)
    capman = config.pluginmanager.getplugin("capturemanager")
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                cp.start()
        else:
            cp.start()
    except ControlPlaneError as e:
        pytest.fail(f"the control plane did not start:\n{e}", pytrace=False)
    config.stash[_CONTROL_PLANE] = cp
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of an admin (system:masters) kubeconfig for the control plane."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(kubeconfig: Path) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient``."""
    from kubernetes import config as k8s_config

    client = k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def core_v1(k8s_api: Any) -> Any:
    """``kubernetes.client.CoreV1Api`` as admin."""
    from kubernetes import client

    return client.CoreV1Api(k8s_api)


@pytest.fixture(scope="session")
def custom_objects(k8s_api: Any) -> Any:
    """``kubernetes.client.CustomObjectsApi`` as admin."""
    from kubernetes import client

    return client.CustomObjectsApi(k8s_api)


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Callable[..., Any]:
    """``kubectl(*args, kubeconfig=None, input=None, check=True) -> CompletedProcess``."""
    return control_plane.kubectl


def _namespace_name(test_name: str) -> str:
    short = re.sub(r"[^a-z0-9]+", "-", test_name.split("[")[0].lower().removeprefix("test_"))
    short = short.strip("-")[:20].strip("-") or "x"
    return f"t-{short}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core_v1: Any) -> Iterator[str]:
    """A fresh namespace ``t-<test>-<random>``, deleted (not awaited) after the test."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = _namespace_name(request.node.name)
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core_v1.delete_namespace(name, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise
