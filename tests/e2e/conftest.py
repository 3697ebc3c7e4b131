"""The e2e tier: a real node (``tests/harness/node.py``: kubelet, containerd, runc), the
chart installed with ``helm install``, workspace pods.

* It runs whenever the machine allows it: root, cgroups, overlayfs (see
  ``building.machine_problem``). Otherwise every e2e test is skipped with that
  reason and the terminal summary says so in red; never silently.
  ``EXTERNALAUTH_SKIP_E2E=1`` skips the tier on purpose, just as loudly.
* Everything it needs is built at the end of collection, outside any per-test
  timeout, with progress on the terminal: kube-apiserver/etcd/kubectl, kubelet,
  kube-scheduler, kube-controller-manager, the operator, pause and workspace
  images, helm; containerd, runc and the CNI plugins are installed with apt-get
  when missing. If any of it fails the tests ERROR with the log: a machine that
  can run a node must run it.
* One node per session (``node`` fixture); a failed test's report gets the tails
  of every server's log.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import building
from tests.harness.binaries import Binaries, BuildError, locate_binaries
from tests.harness.node import Node, NodeControlPlane, NodeError

E2E_DIR = Path(__file__).resolve().parent
SKIP_ENV = "EXTERNALAUTH_SKIP_E2E"


@dataclasses.dataclass
class Prepared:
    """What the collection-time build produced (or why it failed)."""

    binaries: Binaries | None = None
    node_bin_dir: Path | None = None
    images: dict[str, building.ImageArchive] = dataclasses.field(default_factory=dict)
    helm: str | None = None
    error: str | None = None
    seconds: float = 0.0


_SKIP = pytest.StashKey[str]()
_PREPARED = pytest.StashKey[Prepared]()
_NODE = pytest.StashKey[Node]()


def _is_e2e(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


def skip_reason() -> str | None:
    """Why the e2e tier does not run here, or None."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return f"{SKIP_ENV}=1"
    return building.machine_problem()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real node (kubelet, containerd, runc): root and cgroups")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [i for i in items if _is_e2e(i)]
    if not e2e:
        return
    reason = skip_reason()
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"e2e tier NOT run: {reason}"))
    if reason is not None:
        config.stash[_SKIP] = reason


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or find everything the node needs now, before any per-test timeout starts."""
    config = session.config
    if config.option.collectonly or _SKIP in config.stash or not any(_is_e2e(i) for i in session.items):
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            config.stash[_PREPARED] = _prepare()
    else:
        config.stash[_PREPARED] = _prepare()


def _prepare() -> Prepared:
    out = Prepared()
    log: collections.deque[str] = collections.deque(maxlen=200)
    t0 = time.monotonic()
    print("\n[e2e] preparing the node: binaries, images, helm, packages ...", file=sys.stderr)
    try:
        out.binaries = locate_binaries(stream=sys.stderr, build_log=log)
        out.node_bin_dir = building.node_binaries(stream=sys.stderr, log=log)
        out.images = building.images(stream=sys.stderr, log=log)
        out.helm = building.run_script(["bash", str(building.HACK / "build-tools.sh"), "helm"],
                                       stream=sys.stderr, log=log)[-1]
        building.ensure_packages(stream=sys.stderr)
    except (BuildError, building.SetupError, OSError, IndexError) as e:
        out.error = f"{type(e).__name__}: {e}"
    out.seconds = time.monotonic() - t0
    return out


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _SKIP in config.stash:
        terminalreporter.write_sep("!", "E2E TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(
            f"{config.stash[_SKIP]}: the e2e tier (a real node: the chart installed with helm, the operator "
            "pod, a workspace pod fetching with the refreshed token) was NOT run", red=True)
    prepared = config.stash.get(_PREPARED, None)
    node = config.stash.get(_NODE, None)
    if prepared is not None and node is not None and node.startup_seconds is not None:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in node.timings.items())
        terminalreporter.write_line(
            f"[e2e] prepared in {prepared.seconds:.1f}s; node up in {node.startup_seconds:.1f}s ({phases})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and _is_e2e(item):
        node = item.config.stash.get(_NODE, None)
        if node is not None and node.dir is not None:
            report.sections.append(("node logs (tail)", node.log_tail(30)))
            selector = "app.kubernetes.io/name=externalauth-operator"
            pods = node.kubectl("logs", "-n", "externalauth-system", "-l", selector, "--tail=80", check=False)
            report.sections.append(("operator pod logs (tail)", pods.stdout + pods.stderr))
    return report


@pytest.fixture(scope="session")
def prepared(request: pytest.FixtureRequest) -> Prepared:
    found = request.config.stash.get(_PREPARED, None)
    if found is None:  # collected without the build (e.g. --collect-only): should not happen
        pytest.fail("the e2e tier was not prepared at collection", pytrace=False)
    if found.error is not None:
        pytest.fail(f"the e2e node could not be prepared:\n{found.error}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest, prepared: Prepared) -> Iterator[Node]:
    """A started node (Ready, ``default`` ServiceAccount present) for the whole session."""
    assert prepared.node_bin_dir is not None
    started = Node(images=prepared.images, node_bin_dir=prepared.node_bin_dir,
                   control_plane=NodeControlPlane(binaries=prepared.binaries))
    capman = request.config.pluginmanager.getplugin("capturemanager")
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                started.start()
        else:
            started.start()
    except NodeError as e:
        pytest.fail(f"the e2e node did not start:\n{e}", pytrace=False)
    request.config.stash[_NODE] = started
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def helm(prepared: Prepared) -> str:
    """Path of the helm binary (hack/build-tools.sh)."""
    assert prepared.helm is not None
    return prepared.helm
