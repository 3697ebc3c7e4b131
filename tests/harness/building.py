"""What the e2e node needs from the machine and from the build scripts.

- :func:`machine_problem`: why this machine cannot run a node (not root, no
  cgroups, no overlayfs), or None;
- :func:`ensure_packages`: containerd, runc and the CNI plugins from Debian's
  packages, installed with apt-get when missing;
- :func:`node_binaries`: kubelet, kube-scheduler, kube-controller-manager from
  ``hack/build-node.sh``;
- :func:`images`: the operator image (``hack/build-image.sh``) and the pause and
  workspace images (``hack/build-e2e-images.sh``), as OCI archives to import.

Each build script's progress (stderr) is streamed line by line and kept for
error messages. I/O by design (subprocesses); must not import pytest.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from tests.harness import binaries
from tests.harness.binaries import REPO_ROOT

HACK = REPO_ROOT / "hack"
#: Executables the node runs, and the Debian package that brings each.
PACKAGES = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PACKAGE = "containernetworking-plugins"
#: cgroup v1 controllers kubelet (cgroupfs driver) and runc need.
CGROUP_V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")


class SetupError(RuntimeError):
    """A package, binary or image could not be provided; the message carries the log tail."""


@dataclasses.dataclass(frozen=True)
class ImageArchive:
    """An OCI archive and the name:tag ``ctr images import --base-name`` gives it."""

    ref: str
    tar: Path

    @property
    def base_name(self) -> str:
        return self.ref.rsplit(":", 1)[0]


def cgroup_mounts() -> dict[str, Path]:
    """Mounted cgroup hierarchies: v1 controller (or ``name=...``) -> mount point, and
    ``unified`` -> the cgroup2 mount point when there is one."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fstype, _, options = after.split(" ")[:3] if after.count(" ") >= 2 else (after, "", "")
        mount_point = Path(before.split(" ")[4])
        if fstype == "cgroup2":
            found["unified"] = mount_point
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec"):
                    continue
                found[option] = mount_point
    return found


def machine_problem() -> str | None:
    """Why a node cannot run here (a sentence), or None when it can."""
    if sys.platform != "linux":
        return f"the e2e node needs Linux (kubelet, containerd, runc); this is {sys.platform}"
    if os.geteuid() != 0:
        return "the e2e node needs root (kubelet, containerd and runc manage mounts, cgroups and namespaces)"
    mounts = cgroup_mounts()
    if not mounts:
        return "no cgroup filesystem is mounted (kubelet and runc need cgroups)"
    if mounts.get("unified") == Path("/sys/fs/cgroup"):  # cgroup v2 only
        try:
            controllers = (mounts["unified"] / "cgroup.controllers").read_text(encoding="utf-8").split()
        except OSError:
            controllers = []
        missing = [c for c in ("cpu", "memory", "pids") if c not in controllers]
        if missing:
            return f"cgroup v2 controllers {', '.join(missing)} are not available (kubelet needs them)"
    else:
        missing = [c for c in CGROUP_V1_CONTROLLERS if c not in mounts]
        if missing:
            return f"cgroup v1 controllers {', '.join(missing)} are not mounted (kubelet needs them)"
    try:
        filesystems = Path("/proc/filesystems").read_text(encoding="utf-8")
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems.split():
        return "the kernel has no overlay filesystem (containerd's snapshotter needs it)"
    return None


def missing_packages() -> list[str]:
    """Debian packages whose executables the node needs and cannot find."""
    wanted = {pkg for exe, pkg in PACKAGES.items() if shutil.which(exe) is None}
    if not (CNI_BIN_DIR / "loopback").exists():
        wanted.add(CNI_PACKAGE)
    return sorted(wanted)


def ensure_packages(*, stream: IO[str]) -> None:
    """Install the missing Debian packages with apt-get (root); raise SetupError if impossible."""
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SetupError(f"the node needs the Debian packages {', '.join(missing)} and there is no apt-get")
    stream.write(f"[node] apt-get install {' '.join(missing)} ...\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another run may be installing at the same moment: wait for dpkg's lock.
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", *missing]
    res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:  # stale package lists: update once and retry
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], capture_output=True,
                       env=env, timeout=600)
        res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    still = missing_packages()
    if res.returncode != 0 or still:
        raise SetupError(f"apt-get install {' '.join(missing)} failed ({res.returncode}); still missing: "
                         f"{', '.join(still)}\n{res.stderr[-2000:]}")


def run_script(argv: list[str], *, stream: IO[str], log: collections.deque[str] | None = None) -> list[str]:
    """Run a build script, streaming its stderr to ``stream``; return its stdout lines.

    Raises SetupError with the tail of its stderr when it fails.
    """
    return binaries.run_script(argv, stream=stream, log=log, error=SetupError)


def node_binaries(*, stream: IO[str], log: collections.deque[str] | None = None) -> Path:
    """The directory holding kubelet, kube-scheduler and kube-controller-manager."""
    lines = run_script(["bash", str(HACK / "build-node.sh")], stream=stream, log=log)
    if not lines:
        raise SetupError("hack/build-node.sh printed no directory")
    return Path(lines[-1])


def images(*, stream: IO[str], log: collections.deque[str] | None = None) -> dict[str, ImageArchive]:
    """``operator``, ``pause`` and ``workspace`` images, built or found in their caches."""
    operator_dir = Path(run_script(["bash", str(HACK / "build-image.sh")], stream=stream, log=log)[-1])
    index = json.loads((operator_dir / "oci" / "index.json").read_text(encoding="utf-8"))
    tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    found = {"operator": ImageArchive(f"localhost/externalauth-operator:{tag}", operator_dir / "image.tar")}
    dirs = run_script(["bash", str(HACK / "build-e2e-images.sh"), "pause", "workspace"], stream=stream, log=log)
    for name, d in zip(("pause", "workspace"), dirs[-2:], strict=True):
        found[name] = ImageArchive((Path(d) / "ref").read_text(encoding="utf-8").strip(), Path(d) / "image.tar")
    return found
