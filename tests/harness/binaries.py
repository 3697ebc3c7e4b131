"""Locating (or building) kube-apiserver, etcd and kubectl for the test control plane.

``hack/build-control-plane.sh`` does the work: it honours ``KUBEBUILDER_ASSETS`` /
``TEST_ASSET_*`` and otherwise builds the binaries from the Go module proxy into
a per-version cache (slow once, instant afterwards). This module runs it,
streams its progress and reads the directory it prints.

I/O by design (a subprocess); must not import pytest.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"


class BuildError(RuntimeError):
    """The build script failed or named no binaries; the message carries its log tail."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the three executables the control plane needs."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path

    @property
    def bin_dir(self) -> Path:
        return self.kube_apiserver.parent


def locate_binaries(*, stream: IO[str] | None = None, build_log: collections.deque[str] | None = None) -> Binaries:
    """Run ``hack/build-control-plane.sh`` and return the binaries it names.

    The script's progress (stderr) is streamed line by line to ``stream``
    (default: ``sys.stderr``) and kept in ``build_log`` for error reports.
    Its last stdout line is the binary directory, or ``TEST_ASSET`` when the
    ``TEST_ASSET_*`` variables name the binaries one by one.
    """
    stream = sys.stderr if stream is None else stream
    out_lines = run_script(["bash", str(BUILD_SCRIPT)], stream=stream, log=build_log)
    last = out_lines[-1].strip() if out_lines else ""
    if last == "TEST_ASSET":
        return Binaries(
            kube_apiserver=Path(os.environ["TEST_ASSET_KUBE_APISERVER"]),
            etcd=Path(os.environ["TEST_ASSET_ETCD"]),
            kubectl=Path(os.environ["TEST_ASSET_KUBECTL"]),
        )
    if not last:
        raise BuildError(f"{BUILD_SCRIPT} printed no binary directory")
    d = Path(last)
    return Binaries(kube_apiserver=d / "kube-apiserver", etcd=d / "etcd", kubectl=d / "kubectl")


def run_script(argv: list[str], *, stream: IO[str], log: collections.deque[str] | None = None,
               error: type[Exception] = BuildError) -> list[str]:
    """Run a build script, streaming its stderr to ``stream`` line by line (kept in ``log``
    for error reports); return its non-empty stdout lines. Raises ``error`` with the tail of
    its stderr when it fails."""
    tail = log if log is not None else collections.deque(maxlen=200)
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    out: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        out.extend(line.strip() for line in proc.stdout)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        tail.append(line.rstrip("\n"))
        stream.write(line)
        stream.flush()
    rc = proc.wait()
    reader.join()
    if rc != 0:
        raise error(f"{' '.join(argv)} failed with exit code {rc}.\n--- build log (tail) ---\n" + "\n".join(tail))
    return [line for line in out if line]
