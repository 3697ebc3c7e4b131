"""The operator image runs the operator as the chart runs it: as a non-root user, on a
read-only root filesystem with a writable /tmp, answering /healthz, and stopping promptly
on SIGTERM as PID 1. Every test runs on both builds of the image: hack/build-image.sh's
and the Containerfile's (what the release workflow publishes), built here with buildah
from hack/build-image.sh's debootstrap base imported as a local image (BASE_IMAGE), so
no registry is needed.

The image is unpacked with umoci and run with runc (the runtime a kubelet's containerd
uses), sharing the host's network namespace so that the container reaches the test
API server on loopback (like a hostNetwork pod). Needs root (debootstrap, runc); on a
machine without it the test is skipped with that reason, never silently.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGE = REPO / "hack" / "build-image.sh"
CONTAINERFILE = REPO / "Containerfile"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
STARTED = "externalauth operator started"

# A cold image build (debootstrap) takes a minute or two.
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _apt_install(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{missing} not installed and apt-get could not install them"


def _run_shown(request: pytest.FixtureRequest, cmd: list[str], what: str) -> str:
    """Run ``cmd``, its stderr shown on the terminal as it comes; its stdout returned."""
    log: collections.deque[str] = collections.deque(maxlen=60)
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def run() -> tuple[int, str]:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            sys.stderr.write(line)
        return proc.wait(), proc.stdout.read()

    if capman is not None:
        with capman.global_and_fixture_disabled():
            rc, out = run()
    else:
        rc, out = run()
    if rc != 0:
        pytest.fail(f"{what} failed:\n" + "\n".join(log), pytrace=False)
    return out


@pytest.fixture(scope="module", params=["hack/build-image.sh", "Containerfile"])
def image(request: pytest.FixtureRequest, script_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OCI layout directory of the image, from one build or the other."""
    if request.param == "hack/build-image.sh":
        return script_image
    _apt_install("buildah")
    # hack/build-image.sh's debootstrap base (bookworm, signatures checked, security
    # updates) as a local image: the Containerfile's BASE_IMAGE without a registry.
    base_tar = max(script_image.parent.parent.glob("base-bookworm-*.tar"), key=lambda p: p.stat().st_mtime)
    tag = secrets.token_hex(4)
    base, built = f"localhost/externalauth-base:test-{tag}", f"localhost/externalauth-operator:test-{tag}"
    layout = tmp_path_factory.mktemp("containerfile") / "oci"
    ctr = _run_shown(request, ["buildah", "from", "scratch"], "buildah from").strip()
    try:
        _run_shown(request, ["buildah", "add", "--quiet", ctr, str(base_tar), "/"], "buildah add")
        _run_shown(request, ["buildah", "commit", "--quiet", "--rm", ctr, base], "buildah commit")
        # chroot isolation: no cgroup setup (RUN steps need no more here); the host's
        # CA bundle for pip where a proxy inspects TLS to the package index.
        cert = Path("/etc/ssl/certs/ca-certificates.crt")
        cert_args = ["-v", f"{cert}:/etc/ssl/host-ca.crt:ro", "--build-arg", "PIP_CERT=/etc/ssl/host-ca.crt"] \
            if cert.exists() else []
        _run_shown(request, ["buildah", "bud", "--isolation", "chroot", "--pull=never", "--network", "host",
                             "--layers=false", *cert_args, "--build-arg", f"BASE_IMAGE={base}",
                             "--build-arg", f"VERSION={VERSION}", "-f", str(CONTAINERFILE), "-t", built, str(REPO)],
                   "buildah bud -f Containerfile")
        _run_shown(request, ["buildah", "push", "--quiet", built, f"oci:{layout}:{VERSION}"], "buildah push")
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
        subprocess.run(["buildah", "rmi", "--force", built, base], capture_output=True)
    return layout


@pytest.fixture(scope="module")
def script_image(request: pytest.FixtureRequest) -> Path:
    """The OCI layout directory of hack/build-image.sh's image, built (or found in the cache) now."""
    if os.geteuid() != 0:
        pytest.skip("the image test needs root (debootstrap, chroot, runc): NOT run on this machine")
    _apt_install("runc", "umoci")
    out = _run_shown(request, ["bash", str(BUILD_IMAGE)], "hack/build-image.sh")
    return Path(out.split()[-1]) / "oci"


class Container:
    """One runc container made from the image, its state kept under ``tmp``."""

    def __init__(self, *, layout: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.bundle = tmp / "bundle"
        self.root = tmp / "runc-state"
        self.id = f"externalauth-{secrets.token_hex(4)}"
        self.log_path = tmp / "container.log"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{VERSION}", str(self.bundle)],
                       check=True, capture_output=True)
        self.config: dict[str, Any] = json.loads((self.bundle / "config.json").read_text())

    def prepare(self, *, args: list[str], kubeconfig: Path) -> None:
        (self.tmp / "config").mkdir()
        shutil.copy(kubeconfig, self.tmp / "config" / "kubeconfig")
        os.chmod(self.tmp / "config" / "kubeconfig", 0o644)
        c = self.config
        c["root"]["readonly"] = True  # as readOnlyRootFilesystem in the chart
        c["process"]["terminal"] = False
        c["process"]["args"] = [*c["process"]["args"][:1], *args]
        # the host's network namespace: the test API server listens on loopback
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
        c["mounts"] += [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=65536k"]},
            {"destination": "/config", "type": "bind", "source": str(self.tmp / "config"), "options": ["rbind", "ro"]},
        ]
        (self.bundle / "config.json").write_text(json.dumps(c))

    def run(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["runc", "--root", str(self.root), "run", "--bundle", str(self.bundle), self.id],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runc", "--root", str(self.root), *args], capture_output=True, text=True, timeout=60)

    def cleanup(self) -> None:
        self.runc("delete", "--force", self.id)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._log.close()


@pytest.fixture
def container(image: Path, tmp_path: Path) -> Iterator[Container]:
    c = Container(layout=image, tmp=tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def test_the_image_config_is_non_root_with_the_operator_as_entrypoint(container: Container) -> None:
    process = container.config["process"]
    assert process["user"]["uid"] == 65532 and process["user"]["gid"] == 65532
    assert process["args"] == ["/usr/local/bin/externalauth", "run"]
    # umoci turns the image's labels into the runtime annotations
    assert container.config["annotations"]["org.opencontainers.image.version"] == VERSION


def test_the_image_holds_the_locked_dependencies_and_no_simulator(container: Container) -> None:
    """requirements/operator.lock is what pip installed (--require-hashes), and the provider
    simulator (its own distribution, sim/) is not in the image."""
    site = container.bundle / "rootfs" / "usr" / "local" / "lib" / "python3.11" / "dist-packages"
    installed = {}
    for meta in site.glob("*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in meta.read_text().splitlines()[:20] if ": " in line)
        installed[fields["Name"].lower().replace("_", "-")] = fields["Version"]
    locked = {}
    for line in (REPO / "requirements" / "operator.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, version = line.split(" ")[0].partition("==")
            locked[name.lower().replace("_", "-")] = version
    assert installed.pop("externalauth-operator") == VERSION
    assert installed == locked
    assert list(site.glob("providersim*")) == []
    assert list((container.bundle / "rootfs").glob("usr/**/providersim")) == []


def test_the_image_runs_the_operator_read_only_and_stops_on_sigterm(
        container: Container, operator_kubeconfig: Path, namespace: str) -> None:
    port = _free_port()
    container.prepare(kubeconfig=operator_kubeconfig, args=[
        "run", "--kubeconfig=/config/kubeconfig", f"--namespace={namespace}", "--standalone",
        "--metrics-port=0", f"--liveness-port={port}"])
    container.run()
    assert container.proc is not None
    proc = container.proc
    wait_for(lambda: STARTED in container.logs() or proc.poll() is not None, timeout=90,
             message=lambda: f"the operator to start in the container:\n{container.logs()[-3000:]}")
    assert proc.poll() is None, container.logs()[-3000:]

    # what the chart's probes ask (kopf binds the probe's port beside the start-up handlers,
    # not before them: like the kubelet, ask until it answers)
    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=30, message="/healthz to answer 200")
    # non-root, read-only root filesystem, writable /tmp
    assert container.runc("exec", container.id, "id", "-u").stdout.strip() == "65532"
    mounts = container.runc("exec", container.id, "cat", "/proc/self/mountinfo").stdout.splitlines()
    root = next(m.split() for m in mounts if m.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    assert container.runc("exec", container.id, "touch", "/tmp/x").returncode == 0

    # SIGTERM to PID 1: kopf's handler stops the operator cleanly, long before a grace period
    assert container.runc("kill", container.id, "TERM").returncode == 0
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the operator ignored SIGTERM for 20 s:\n{container.logs()[-3000:]}")
    assert rc == 0, container.logs()[-3000:]
    assert "externalauth operator stopped" in container.logs()
