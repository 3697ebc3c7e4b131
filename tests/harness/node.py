"""A real single-node Kubernetes for the e2e tier: kubelet running pods through
containerd and runc, next to etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, with no registry (images are imported) and every piece of state in
temp dirs.

    from tests.harness.node import Node

    with Node(images=building.images(stream=sys.stderr)) as node:
        node.kubectl("get", "nodes")

How it stays inside the run (docs/development.md, "The e2e tier: a real node", has the
obstacles met and what solved them):

* **Network.** Every listener is on 127.0.0.1: etcd, kube-apiserver, the
  controller-manager's and scheduler's secure ports, kubelet's API and healthz
  ports, containerd's streaming server. The CNI network is the ``loopback`` plugin
  only, so no bridge or address is ever created on the host; pods must use
  ``hostNetwork`` (a pod without it gets no address and does not start). A
  hostNetwork pod reaches the API server and the provider simulator on loopback.
* **Files.** containerd's root, state, socket, runc root and CNI config, and
  kubelet's root dir and pod logs live in ``/tmp/externalauth-node-*``. What lands
  outside is removed by :meth:`Node.stop`: the shims' sockets under
  ``/run/containerd/s``, kubelet's symlinks in ``/var/log/containers``.
* **cgroups.** kubelet's ``cgroupRoot`` is ``/externalauth-e2e-<random>`` in every
  hierarchy, so two runs on one machine never share pods' cgroups; teardown kills
  what is left in it and removes it.
* **sysctls.** kubelet sets a few host sysctls (``vm.overcommit_memory``,
  ``kernel.panic``, ...); their values are saved before and restored after.
* **A killed run** (SIGKILL of pytest): kubelet, containerd and the controllers die
  with it (``PR_SET_PDEATHSIG``); the next :meth:`Node.start` finds the dir whose
  owner is gone and tears it down as :meth:`Node.stop` would.

I/O by design (processes, mounts, cgroups, sysctls); must not import pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import yaml

from providersim import pki
from tests.harness import building
from tests.harness.controlplane import _PRCTL, STOP_GRACE, ControlPlane, _die_with_parent, _free_port, _tail

NODE_NAME = "externalauth-e2e"
#: Host sysctls kubelet (and CNI plugins) may change; saved at start, restored at stop.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
#: Seconds kubelet propagates Secret changes within (its syncFrequency) at most, roughly.
SYNC_FREQUENCY = "5s"
#: Seconds each readiness step may take (2 slow cores shared with other test runs).
START_TIMEOUT = float(os.environ.get("EXTERNALAUTH_NODE_START_TIMEOUT", "180"))
_DIR_PREFIX = "externalauth-node-"
_STATE_FILE = "node.json"
_CONTAINER_LOGS = Path("/var/log/containers")
#: What kubelet creates whatever its --root-dir says; removed when no other kubelet runs.
_KUBELET_FIXED = (Path("/var/lib/kubelet/device-plugins/kubelet.sock"), Path("/var/lib/kubelet/device-plugins"),
                  Path("/var/lib/kubelet"), _CONTAINER_LOGS)


class NodeError(RuntimeError):
    """The node could not be set up, started or stopped; the message says what and shows logs."""


# --------------------------------------------------------------------------
# The control plane in node mode
# --------------------------------------------------------------------------


def node_apiserver_args(args: list[str], *, pki_dir: Path) -> list[str]:
    """The harness's kube-apiserver flags turned into a node's: Node authorization,
    the ServiceAccount admission plugin back on (pods get projected tokens),
    NodeRestriction, and a client certificate for talking to kubelet."""
    out = list(args)
    replaced = {"--authorization-mode=RBAC": "--authorization-mode=Node,RBAC"}
    dropped = {"--disable-admission-plugins=ServiceAccount"}
    missing = [a for a in [*replaced, *dropped] if a not in out]
    if missing:
        raise NodeError(f"tests/harness/controlplane.py no longer passes {missing}: update node_apiserver_args")
    out = [replaced.get(a, a) for a in out if a not in dropped]
    return [
        *out,
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={pki_dir / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki_dir / 'kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki_dir / 'serving-ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


class NodeControlPlane(ControlPlane):
    """``ControlPlane`` with the flags and certificates a kubelet needs (see
    :func:`node_apiserver_args`), plus a serving certificate for kubelet itself."""

    KUBELET_CLIENT = "kube-apiserver-kubelet-client"

    def __init__(self, **kwargs: Any) -> None:
        # The chart installs the CRDs on a node, as it does for users.
        super().__init__(**{"crds_dir": None, **kwargs})

    def _write_certs(self) -> None:
        super()._write_certs()
        d = self._require_dir() / "pki"
        assert self._client_ca is not None and self._serving_ca is not None
        client = pki.issue(cn=self.KUBELET_CLIENT, issuer=self._client_ca, client=True)
        serving = pki.issue(cn=NODE_NAME, issuer=self._serving_ca, hosts=["127.0.0.1", "localhost", NODE_NAME])
        pki.write_files(d, {
            "kubelet-client.crt": client.cert_pem,
            "kubelet-client.key": client.key_pem,
            "kubelet.crt": serving.cert_pem + self._serving_ca.cert_pem,
            "kubelet.key": serving.key_pem,
        })

    def _launch_apiserver(self) -> None:
        if "--enable-admission-plugins=NodeRestriction" not in self._apiserver_args:
            self._apiserver_args = node_apiserver_args(self._apiserver_args, pki_dir=self.pki_dir)
        super()._launch_apiserver()

    @property
    def pki_dir(self) -> Path:
        return self._require_dir() / "pki"


# --------------------------------------------------------------------------
# Small host helpers
# --------------------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text(encoding="ascii").strip()
    return values


def restore_sysctls(saved: Mapping[str, str]) -> list[str]:
    """Write back the saved values; return the names that were changed."""
    changed = []
    for name, value in saved.items():
        path = _sysctl_path(name)
        with contextlib.suppress(OSError):
            if path.read_text(encoding="ascii").strip() != value:
                path.write_text(value, encoding="ascii")
                changed.append(name)
    return changed


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    found = []
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = line.split(" ")[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(prefix):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(root: Path) -> list[Path]:
    """Unmount everything below ``root`` (lazily if busy); return what could not be."""
    for point in mounts_under(root):
        res = subprocess.run(["umount", str(point)], capture_output=True, timeout=30)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)
    return mounts_under(root)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _processes(name: str, *, argument: str | None = None) -> list[int]:
    """PIDs of processes running executable ``name`` (with ``argument`` on their command line)."""
    found = []
    for pid in _pids():
        cmd = _cmdline(pid)
        if cmd and Path(cmd[0]).name == name and (argument is None or argument in cmd):
            found.append(pid)
    return found


def shims_of(socket: Path) -> list[int]:
    """PIDs of containerd shims started by the containerd listening on ``socket``."""
    return _processes("containerd-shim-runc-v2", argument=str(socket))


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def cgroup_dirs(name: str) -> list[Path]:
    """``/<name>`` in every mounted hierarchy (v1 controllers and the unified one)."""
    return sorted({mount / name.strip("/") for mount in building.cgroup_mounts().values()})


def create_cgroup_root(name: str) -> None:
    """kubelet wants its cgroupRoot to exist; cpuset needs cpus and mems copied from the parent."""
    for d in cgroup_dirs(name):
        d.mkdir(exist_ok=True)
        for key in ("cpuset.cpus", "cpuset.mems"):
            parent = d.parent / key
            if parent.exists() and not (d / key).read_text(encoding="ascii").strip():
                (d / key).write_text(parent.read_text(encoding="ascii"), encoding="ascii")


def processes_in_cgroups(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text(encoding="ascii").split())
    return pids


def remove_cgroups(name: str, *, timeout: float = 20.0) -> list[Path]:
    """Kill every process left in the cgroup tree, then remove its dirs deepest first;
    return the dirs that could not be removed."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in processes_in_cgroups(name):
            _kill(pid)
        left = []
        for top in cgroup_dirs(name):
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# --------------------------------------------------------------------------
# Teardown from the state on disk (also used for runs that were killed)
# --------------------------------------------------------------------------


def teardown_dir(d: Path, *, stream: IO[str] | None = None) -> list[str]:
    """Undo everything a node with state dir ``d`` did to the host; return problems left.

    Idempotent: every step looks at what is there now.
    """
    problems: list[str] = []
    try:
        state = json.loads((d / _STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    socket = d / "containerd" / "containerd.sock"
    # 1. The pods' processes (the containers), then the shims that held them.
    if state.get("cgroup_root"):
        for pid in processes_in_cgroups(state["cgroup_root"]):
            _kill(pid)
    shim_sockets = _shim_sockets(d)
    for pid in shims_of(socket):
        _kill(pid)
    # 2. containerd itself, if it outlived its parent.
    for pid in _processes("containerd", argument=str(d / "containerd" / "config.toml")):
        _kill(pid)
    _wait_gone(lambda: bool(shims_of(socket)), timeout=10)
    # 3. Mounts (container root filesystems, shm, kubelet's Secret and projected volumes).
    left = unmount_all(d)
    if left:
        problems.append(f"still mounted: {', '.join(map(str, left))}")
    # 4. Files outside the dir.
    for sock in shim_sockets:
        with contextlib.suppress(OSError):
            sock.unlink()
    for parent in (Path("/run/containerd/s"), Path("/run/containerd")):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty: another containerd may use it
    if _CONTAINER_LOGS.is_dir():
        for link in _CONTAINER_LOGS.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(d) in os.readlink(link):
                    link.unlink()
    if not _processes("kubelet"):
        for path in _KUBELET_FIXED:  # a socket, then directories only when empty
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
    # 5. cgroups and sysctls.
    if state.get("cgroup_root"):
        stuck = remove_cgroups(state["cgroup_root"])
        if stuck:
            problems.append(f"cgroups not removed: {', '.join(map(str, stuck))}")
    changed = restore_sysctls(state.get("sysctls") or {})
    if changed and stream is not None:
        stream.write(f"[node] restored sysctls {', '.join(changed)}\n")
    # 6. The dir, unless something is still mounted in it.
    if not mounts_under(d):
        shutil.rmtree(d, ignore_errors=True)
    return problems


def _shim_sockets(d: Path) -> list[Path]:
    """The shims' sockets (under /run/containerd/s), from the task bundles' ``address`` files."""
    found = []
    tasks = d / "containerd" / "state" / "io.containerd.runtime.v2.task"
    for address in tasks.glob("*/*/address"):
        with contextlib.suppress(OSError):
            value = address.read_text(encoding="utf-8").strip().removeprefix("unix://")
            if value.startswith("/run/containerd/s/"):
                found.append(Path(value))
    return found


def _wait_gone(still_there: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while still_there() and time.monotonic() < deadline:
        time.sleep(0.1)


def sweep_orphaned_nodes(stream: IO[str] | None = None) -> None:
    """Tear down node dirs whose owning process is gone (a run that was killed)."""
    for d in Path(tempfile.gettempdir()).glob(_DIR_PREFIX + "*"):
        try:
            pid = int((d / "owner.pid").read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            if stream is not None:
                stream.write(f"[node] tearing down {d}, left by process {pid} which is gone\n")
            teardown_dir(d, stream=stream)


# --------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------


class Node:
    """A control plane in node mode plus controller-manager, scheduler, containerd and kubelet.

    ``images`` (name -> archive) must hold ``pause`` (the sandbox image); all of them
    are imported into containerd's ``k8s.io`` namespace. ``start()`` returns once the
    node is Ready and the ``default`` ServiceAccount exists; ``stop()`` is idempotent,
    also runs at interpreter exit, and restores the host (see the module docstring).
    """

    def __init__(
        self,
        *,
        images: Mapping[str, building.ImageArchive],
        node_bin_dir: Path,
        control_plane: NodeControlPlane | None = None,
        log_stream: IO[str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        if "pause" not in images:
            raise NodeError("images must include 'pause' (containerd's sandbox image)")
        self.images = dict(images)
        self.node_bin_dir = node_bin_dir
        self.control_plane = control_plane or NodeControlPlane()
        self.stream = log_stream or sys.stderr
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.cgroup_root = f"/externalauth-e2e-{secrets.token_hex(4)}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        #: Seconds per startup phase.
        self.timings: dict[str, float] = {}
        self.startup_seconds: float | None = None

    # -- properties ----------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self._require_dir() / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def apiserver_port(self) -> int:
        return self.control_plane.secure_port

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Node:
        if self.dir is not None:
            raise NodeError("already started")
        t0 = mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = now - mark
            mark = now

        sweep_orphaned_nodes(self.stream)
        self.dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self.dir / "owner.pid").write_text(str(os.getpid()), encoding="ascii")
        self._save_state()
        atexit.register(self.stop)
        try:
            self.control_plane.start()
            phase("control plane")
            self._start_containerd()
            phase("containerd")
            self._import_images()
            phase("images")
            self._start_controllers()
            phase("controllers")
            self._start_kubelet()
            self._wait(f"node {NODE_NAME} registered", lambda: self._exists(f"/api/v1/nodes/{NODE_NAME}"))
            self._initialize_node()
            self._wait("node Ready", self._node_ready)
            phase("kubelet until node Ready")
            self._wait("ServiceAccount default/default", lambda: self._exists(
                "/api/v1/namespaces/default/serviceaccounts/default"))
            phase("default ServiceAccount")
        except BaseException as e:
            report = self.log_tail(40)
            try:
                self.stop()
            except NodeError as teardown:
                report += f"\n{teardown}"
            if isinstance(e, NodeError | building.SetupError):
                raise NodeError(f"{e}\n{report}") from e
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop kubelet, the controllers and containerd, clean the host, stop the control plane."""
        with self._lock:
            if self.dir is None:
                return
            for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
                self._stop_process(self._procs.pop(name, None))
            # containerd stays up while the pods' processes are killed, so that its shims
            # can reap them; then it goes too.
            state = json.loads((self.dir / _STATE_FILE).read_text(encoding="utf-8"))
            for pid in processes_in_cgroups(state["cgroup_root"]):
                _kill(pid)
            self._stop_process(self._procs.pop("containerd", None))
            keep = os.environ.get("EXTERNALAUTH_KEEP_NODE_LOGS") == "1"
            if keep:
                logs = Path(tempfile.mkdtemp(prefix="externalauth-node-logs-"))
                for log in self.dir.glob("*.log"):
                    shutil.copy(log, logs)
                self.stream.write(f"[node] logs kept in {logs}\n")
            problems = teardown_dir(self.dir, stream=self.stream)
            self.dir = None
            self.control_plane.stop()
        atexit.unregister(self.stop)
        if problems:
            raise NodeError("the node's teardown left: " + "; ".join(problems))

    # -- helpers for tests ---------------------------------------------------

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """kubectl as admin (see ``ControlPlane.kubectl``)."""
        return self.control_plane.kubectl(*args, **kwargs)

    def create_namespace(self, name: str) -> None:
        """Create a namespace and wait for its ``default`` ServiceAccount (pods need it)."""
        self.control_plane.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self._wait(f"ServiceAccount {name}/default",
                   lambda: self._exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"))

    def log_tail(self, n: int = 40) -> str:
        parts = [self.control_plane.log_tail(n)]
        if self.dir is not None:
            for name in ("containerd", "kube-controller-manager", "kube-scheduler", "kubelet"):
                log = self.dir / f"{name}.log"
                parts.append(f"--- {name} ({log}) ---\n{_tail(log, n)}")
        return "\n".join(parts)

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """containerd's ctr in the ``k8s.io`` namespace (the one kubelet uses)."""
        cmd = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise NodeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    # -- internals -------------------------------------------------------------

    def _require_dir(self) -> Path:
        if self.dir is None:
            raise NodeError("the node is not started")
        return self.dir

    def _save_state(self) -> None:
        """What teardown needs, on disk, so that a later run can undo a killed one."""
        state = {"cgroup_root": self.cgroup_root, "sysctls": read_sysctls()}
        (self._require_dir() / _STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        d = self._require_dir()
        with (d / f"{name}.log").open("ab") as log:
            log.write(f"### {' '.join(args)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=d,
                start_new_session=True, preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        self._procs[name] = proc
        return proc

    def _wait(self, what: str, check: Callable[[], bool], *, timeout: float | None = None) -> None:
        """Poll ``check()`` until true; fail early when one of the node's processes exited."""
        limit = timeout or self.start_timeout
        deadline = time.monotonic() + limit
        delay = 0.1
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise NodeError(f"{what}: {name} exited with code {proc.returncode}")
            try:
                if check():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NodeError(f"{what}: not reached after {limit:.0f}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _exists(self, path: str) -> bool:
        status, _ = self.control_plane._raw_request("GET", path, timeout=5)
        return status == 200

    def _node_ready(self) -> bool:
        status, node = self.control_plane._raw_request("GET", f"/api/v1/nodes/{NODE_NAME}", timeout=5)
        if status != 200:
            return False
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    # containerd ---------------------------------------------------------------

    def _start_containerd(self) -> None:
        building.ensure_packages(stream=self.stream)
        d = self._require_dir() / "containerd"
        (d / "cni").mkdir(parents=True)
        (d / "cni" / "10-loopback.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "externalauth-e2e-loopback", "plugins": [{"type": "loopback"}],
        }), encoding="utf-8")
        config = d / "config.toml"
        config.write_text(containerd_config(
            d, sandbox_image=self.images["pause"].ref, cni_bin_dir=building.CNI_BIN_DIR), encoding="utf-8")
        self._popen("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd's socket", lambda: self.socket.exists() and subprocess.run(
            ["ctr", "--address", str(self.socket), "version"], capture_output=True, timeout=10).returncode == 0)

    def _import_images(self) -> None:
        for name, image in self.images.items():
            self.stream.write(f"[node] importing the {name} image {image.ref} ...\n")
            self.ctr("images", "import", "--base-name", image.base_name, str(image.tar))
            listed = self.ctr("images", "list", "--quiet").stdout.split()
            if image.ref not in listed:
                raise NodeError(f"ctr imported {image.tar} but lists no {image.ref} (it lists {listed})")

    # controllers ----------------------------------------------------------------

    def _start_controllers(self) -> None:
        cp = self.control_plane
        pki_dir = cp.pki_dir
        cp.kubectl("create", "clusterrolebinding", "externalauth-e2e-apiserver-kubelet",
                   "--clusterrole=system:kubelet-api-admin", f"--user={NodeControlPlane.KUBELET_CLIENT}")
        cm = str(cp.mint_user("system:kube-controller-manager"))
        self._popen("kube-controller-manager", [
            str(self.node_bin_dir / "kube-controller-manager"),
            f"--kubeconfig={cm}", f"--authentication-kubeconfig={cm}", f"--authorization-kubeconfig={cm}",
            "--bind-address=127.0.0.1", f"--secure-port={_free_port()}",
            f"--cert-dir={self._require_dir() / 'kube-controller-manager-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            f"--root-ca-file={pki_dir / 'serving-ca.crt'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--controllers=*,-nodeipam",
        ])
        scheduler = str(cp.mint_user("system:kube-scheduler"))
        self._popen("kube-scheduler", [
            str(self.node_bin_dir / "kube-scheduler"),
            f"--kubeconfig={scheduler}", f"--authentication-kubeconfig={scheduler}",
            f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1", f"--secure-port={_free_port()}",
            f"--cert-dir={self._require_dir() / 'kube-scheduler-certs'}",
            "--leader-elect=false",
        ])

    # kubelet -------------------------------------------------------------------------

    def _start_kubelet(self) -> None:
        d = self._require_dir() / "kubelet"
        d.mkdir()
        create_cgroup_root(self.cgroup_root)
        config = d / "config.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            d, pki_dir=self.control_plane.pki_dir, socket=self.socket, cgroup_root=self.cgroup_root,
            port=_free_port(), healthz_port=_free_port())), encoding="utf-8")
        kubeconfig = self.control_plane.mint_user(f"system:node:{NODE_NAME}", ["system:nodes"])
        self._popen("kubelet", [
            str(self.node_bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={d / 'root'}",
            f"--hostname-override={NODE_NAME}",
            # kubelet refuses a loopback --node-ip; as an "external cloud provider" it keeps
            # the addresses _initialize_node() sets instead.
            "--cloud-provider=external",
            "--v=2",
        ])

    def _initialize_node(self) -> None:
        """Do what a cloud controller manager would: give the node the address 127.0.0.1
        (so kube-apiserver reaches kubelet, and hostNetwork pods' IP and probes stay on
        loopback) and lift the ``uninitialized`` taint."""
        path = f"/api/v1/nodes/{NODE_NAME}"
        self.control_plane.request("PATCH", f"{path}/status", content_type="application/merge-patch+json", body={
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": NODE_NAME}]}})
        _, node = self.control_plane.request("GET", path)
        taints = [t for t in node["spec"].get("taints") or []
                  if t["key"] != "node.cloudprovider.kubernetes.io/uninitialized"]
        self.control_plane.request("PATCH", path, content_type="application/merge-patch+json",
                                   body={"spec": {"taints": taints or None}})

    @staticmethod
    def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_GRACE)


def containerd_config(d: Path, *, sandbox_image: str, cni_bin_dir: Path) -> str:
    """containerd 1.6 configuration (version 2) with all of its state under ``d``.

    ``restrict_oom_score_adj``: root here lacks CAP_SYS_RESOURCE, so a negative
    oom_score_adj (which pod sandboxes ask for) cannot be written.
    """
    def q(value: object) -> str:
        return json.dumps(str(value))

    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return "\n".join([
        "version = 2",
        f"root = {q(d / 'root')}",
        f"state = {q(d / 'state')}",
        "[grpc]",
        f"  address = {q(d / 'containerd.sock')}",
        "[ttrpc]",
        f"  address = {q(d / 'containerd.sock.ttrpc')}",
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {q(d / 'opt')}",
        cri,
        f"  sandbox_image = {q(sandbox_image)}",
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        f"{cri[:-1]}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"{cri[:-1]}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"{cri[:-1]}.containerd.runtimes.runc.options]",
        f"  Root = {q(d / 'runc')}",
        "  SystemdCgroup = false",
        f"{cri[:-1]}.cni]",
        f"  bin_dir = {q(cni_bin_dir)}",
        f"  conf_dir = {q(d / 'cni')}",
        "",
    ])


def kubelet_config(d: Path, *, pki_dir: Path, socket: Path, cgroup_root: str, port: int,
                   healthz_port: int) -> dict[str, Any]:
    """KubeletConfiguration for this machine (cgroup v1, cgroupfs, no swap accounting,
    loopback only, images that can never be pulled again)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki_dir / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "client-ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "podLogsDir": str(d / "pod-logs"),
        "staticPodPath": "",
        "syncFrequency": SYNC_FREQUENCY,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": True,
        "resolvConf": "/etc/resolv.conf",
    }
