"""A real Kubernetes control plane (kube-apiserver + etcd) for tests and demos.

What controller-runtime's *envtest* does for Go operators, in Python: no
kubelet, no nodes, just the API, so that compare-and-swap on
``resourceVersion``, 409 Conflicts, watches, CRD schema validation and RBAC
behave exactly as in a cluster.

Usable from pytest (see ``tests/harness/plugin.py``) and from a plain script::

    from tests.harness.controlplane import ControlPlane

    with ControlPlane() as cp:           # or cp.start() ... cp.stop()
        cp.kubectl("get", "crd")
        print(cp.kubeconfig, cp.server)

Binaries come from ``tests/harness/binaries.py`` (``hack/build-control-plane.sh``
underneath); certificates from ``providersim.pki``, the one x509 helper of the
repository, which the provider simulator uses too.

This module is I/O by design (processes, files, sockets) and must not import
pytest.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from providersim import pki
from tests.harness.binaries import REPO_ROOT, Binaries, BuildError, locate_binaries

CRDS_DIR = REPO_ROOT / "crds"

#: Seconds a server gets to exit after SIGTERM before SIGKILL.
STOP_GRACE = 10.0
#: Seconds etcd/kube-apiserver get to become ready (2 slow cores, cold page cache).
START_TIMEOUT = float(os.environ.get("EXTERNALAUTH_CP_START_TIMEOUT", "120"))


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or used."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stderr ---\n{self.stderr or ''}".rstrip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(data.splitlines()[-n:])


_DIR_PREFIX = "externalauth-cp-"


def _sweep_orphaned_dirs() -> None:
    """Remove temp dirs left by control planes whose owner process was killed."""
    for d in Path(tempfile.gettempdir()).glob(_DIR_PREFIX + "*"):
        try:
            pid = int((d / "owner.pid").read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL the child when this (the parent) process dies.

    SIGKILL, not SIGTERM: both servers would get it at once, and a gracefully
    stopping etcd waits for kube-apiserver's watch streams while kube-apiserver
    waits for etcd, so neither would exit. The data is throwaway anyway.
    """
    with contextlib.suppress(Exception):
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


try:  # resolved in the parent so the child only makes the call
    import ctypes

    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):  # pragma: no cover
    _PRCTL = None


# --------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------


class ControlPlane:
    """kube-apiserver + etcd on free loopback ports, with an admin kubeconfig.

    ``start()`` builds/locates the binaries, writes certificates, starts etcd
    and kube-apiserver, waits for readiness and applies the CRDs in
    ``crds/``. ``stop()`` is idempotent and also runs at interpreter exit.
    """

    CRD_NAMES = (
        "externalauthlinks.externalauth.io",
        "externalauthproviders.externalauth.io",
    )

    def __init__(
        self,
        *,
        binaries: Binaries | None = None,
        crds_dir: Path | None = CRDS_DIR,
        start_timeout: float = START_TIMEOUT,
        keep_dir: bool | None = None,
        log_stream: IO[str] | None = None,
    ) -> None:
        self._binaries = binaries
        self.crds_dir = crds_dir
        self.start_timeout = start_timeout
        self.keep_dir = os.environ.get("EXTERNALAUTH_KEEP_CP_DIR") == "1" if keep_dir is None else keep_dir
        self._log_stream = log_stream
        self.build_log: collections.deque[str] = collections.deque(maxlen=200)
        self.dir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._apiserver_args: list[str] = []
        self.etcd_url = ""
        self.secure_port = 0
        self._client_ca: pki.KeyPair | None = None
        self._serving_ca: pki.KeyPair | None = None
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._admin: pki.KeyPair | None = None
        self.startup_seconds: float | None = None
        #: Seconds per startup phase (binaries, certs, etcd, kube-apiserver, crds).
        self.timings: dict[str, float] = {}

    # -- public properties ---------------------------------------------------

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            try:
                self._binaries = locate_binaries(stream=self._log_stream, build_log=self.build_log)
            except BuildError as e:
                raise ControlPlaneError(str(e)) from e
        return self._binaries

    @property
    def bin_dir(self) -> Path:
        return self.binaries.bin_dir

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    @property
    def kubeconfig(self) -> Path:
        return self._require_dir() / "admin.kubeconfig"

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver, wait until ready, apply the CRDs."""
        if self.dir is not None:
            raise ControlPlaneError("already started")
        t0 = mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = now - mark
            mark = now

        binaries = self.binaries  # may build; raises ControlPlaneError with the build log
        phase("binaries")
        _sweep_orphaned_dirs()
        self.dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self.dir / "owner.pid").write_text(str(os.getpid()), encoding="ascii")
        atexit.register(self.stop)
        try:
            self._write_certs()
            phase("certs")
            self._start_etcd(binaries)
            phase("etcd")
            self._start_apiserver(binaries)
            phase("kube-apiserver")
            if self.crds_dir is not None:
                self.apply_crds()
                phase("crds")
        except BaseException as e:
            report = self.failure_report()
            self.stop()
            if isinstance(e, ControlPlaneError):
                raise ControlPlaneError(f"{e}\n{report}") from e
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """SIGTERM kube-apiserver then etcd (SIGKILL after a grace), remove the temp dir."""
        with self._lock:
            self._stop_process(self._apiserver)
            self._apiserver = None
            self._stop_process(self._etcd)
            self._etcd = None
            if self.dir is not None and not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            elif self.dir is not None:
                print(f"[control-plane] kept {self.dir}", file=sys.stderr)
            self.dir = None
        atexit.unregister(self.stop)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd data."""
        self._stop_process(self._apiserver)
        self._apiserver = None
        self._launch_apiserver()
        self._wait_apiserver_ready()
        if self.crds_dir is not None:
            self._wait_crds()

    def restart_etcd(self, *, down: float = 0.0) -> None:
        """Stop etcd (SIGTERM) and start it again on the same port and data, after ``down``
        seconds of outage; kube-apiserver stays up and reconnects by itself."""
        assert self._etcd is not None, "etcd is not running"
        args = list(self._etcd.args)  # type: ignore[arg-type]
        self._stop_process(self._etcd)
        self._etcd = None
        if down:
            time.sleep(down)  # the outage itself is what is being tested
        self._etcd = self._popen([str(a) for a in args], "etcd.log")
        self._wait("etcd /health", self._etcd, self._etcd_healthy)
        self._wait_apiserver_ready()

    # -- helpers for tests ---------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: str | os.PathLike[str] | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (admin unless ``kubeconfig``)."""
        cmd = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def mint_user(self, name: str, groups: Iterable[str] = ()) -> Path:
        """Return a kubeconfig for a user ``name`` in ``groups`` (a client cert, no RBAC)."""
        d = self._require_dir()
        assert self._client_ca is not None
        kp = pki.issue(cn=name, orgs=list(groups), issuer=self._client_ca, client=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = d / "users" / f"{safe}-{secrets.token_hex(3)}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        self._write_kubeconfig(path, user=name, client=kp)
        return path

    def apply_crds(self, crds_dir: Path | None = None) -> list[str]:
        """Server-side apply every CRD in ``crds_dir`` and wait until Established and served."""
        d = crds_dir or self.crds_dir
        if d is None:
            return []
        names: list[str] = []
        for f in sorted(Path(d).glob("*.y*ml")):
            for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
                if not doc:
                    continue
                name = doc["metadata"]["name"]
                self.request(
                    "PATCH",
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                    "?fieldManager=externalauth-tests&force=true",
                    body=doc,
                    content_type="application/apply-patch+yaml",
                )
                names.append(name)
        self._wait_crds(names)
        return names

    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of both servers' logs."""
        if self.dir is None:
            return "(control plane not running: no logs)"
        return (
            f"--- etcd ({self.dir / 'etcd.log'}) ---\n{_tail(self.dir / 'etcd.log', n)}\n"
            f"--- kube-apiserver ({self.dir / 'kube-apiserver.log'}) ---\n"
            f"{_tail(self.dir / 'kube-apiserver.log', n)}"
        )

    def failure_report(self, n: int = 50) -> str:
        """Both server logs plus the build log, for error messages."""
        build = "\n".join(list(self.build_log)[-n:]) or "(no build output)"
        return f"{self.log_tail(n)}\n--- hack/build-control-plane.sh (tail) ---\n{build}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> tuple[int, Any]:
        """An admin HTTPS request to the apiserver; returns (status, decoded JSON or text).

        Raises ``ControlPlaneError`` on a status >= 400.
        """
        status, payload = self._raw_request(method, path, body=body, content_type=content_type, timeout=timeout)
        if status >= 400:
            raise ControlPlaneError(f"{method} {path} -> {status}: {payload}")
        return status, payload

    # -- internals -----------------------------------------------------------

    def _require_dir(self) -> Path:
        if self.dir is None:
            raise ControlPlaneError("control plane is not started")
        return self.dir

    def _write_certs(self) -> None:
        d = self._require_dir()
        self._serving_ca = pki.issue(cn="externalauth-test-serving-ca", is_ca=True)
        serving = pki.issue(
            cn="kube-apiserver",
            issuer=self._serving_ca,
            hosts=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "127.0.0.1",
                "10.0.0.1",
            ],
        )
        self._client_ca = pki.issue(cn="externalauth-test-client-ca", is_ca=True)
        admin = pki.issue(cn="admin", orgs=["system:masters"], issuer=self._client_ca, client=True)
        sa_key, sa_pub = pki.signing_key_pem()
        pki.write_files(
            d / "pki",
            {
                "serving-ca.crt": self._serving_ca.cert_pem,
                "apiserver.crt": serving.cert_pem + self._serving_ca.cert_pem,
                "apiserver.key": serving.key_pem,
                "client-ca.crt": self._client_ca.cert_pem,
                "admin.crt": admin.cert_pem,
                "admin.key": admin.key_pem,
                "sa.key": sa_key,
                "sa.pub": sa_pub,
            },
        )
        ctx = ssl.create_default_context(cafile=str(d / "pki" / "serving-ca.crt"))
        ctx.load_cert_chain(str(d / "pki" / "admin.crt"), str(d / "pki" / "admin.key"))
        self._ssl = ctx
        self._admin = admin

    def _write_kubeconfig(self, path: Path, *, user: str, client: pki.KeyPair) -> None:
        assert self._serving_ca is not None

        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "externalauth-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self._serving_ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(client.cert_pem),
                        "client-key-data": b64(client.key_pem),
                    },
                }
            ],
            "contexts": [
                {
                    "name": f"{user}@externalauth-test",
                    "context": {
                        "cluster": "externalauth-test",
                        "user": user,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": f"{user}@externalauth-test",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)

    def _popen(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        d = self._require_dir()
        with (d / log_name).open("ab") as log:
            log.write(f"### {' '.join(args)}\n".encode())
            log.flush()
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=d,
                start_new_session=True,  # a terminal's Ctrl-C must not kill etcd first
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )

    def _start_etcd(self, binaries: Binaries) -> None:
        d = self._require_dir()
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between probe and bind
            client, peer = _free_port(), _free_port()
            self.etcd_url = f"http://127.0.0.1:{client}"
            peer_url = f"http://127.0.0.1:{peer}"
            self._etcd = self._popen(
                [
                    str(binaries.etcd),
                    "--name=externalauth-test",
                    f"--data-dir={d / 'etcd-data'}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=externalauth-test={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                "etcd.log",
            )
            try:
                self._wait("etcd /health", self._etcd, self._etcd_healthy)
                return
            except ControlPlaneError as e:
                last_error = e
                self._stop_process(self._etcd)
                self._etcd = None
                if "address already in use" not in _tail(d / "etcd.log", 30):
                    raise
                shutil.rmtree(d / "etcd-data", ignore_errors=True)
        raise ControlPlaneError(f"etcd could not bind a free port: {last_error}")

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return bool(r.status == 200 and json.load(r).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _start_apiserver(self, binaries: Binaries) -> None:
        d = self._require_dir()
        pki = d / "pki"
        (d / "apiserver-certs").mkdir(exist_ok=True)
        for _attempt in range(3):
            self.secure_port = _free_port()
            self._apiserver_args = [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={self.secure_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'client-ca.crt'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
            ]
            assert self._admin is not None
            self._write_kubeconfig(self.kubeconfig, user="admin", client=self._admin)
            self._launch_apiserver()
            try:
                self._wait_apiserver_ready()
                return
            except ControlPlaneError:
                self._stop_process(self._apiserver)
                self._apiserver = None
                if "address already in use" not in _tail(d / "kube-apiserver.log", 30):
                    raise
        raise ControlPlaneError("kube-apiserver could not bind a free port")

    def _launch_apiserver(self) -> None:
        self._apiserver = self._popen(self._apiserver_args, "kube-apiserver.log")

    def _wait_apiserver_ready(self) -> None:
        assert self._apiserver is not None
        self._wait("kube-apiserver /readyz", self._apiserver, lambda: self._ok("/readyz"))
        self._wait(
            "namespace default",
            self._apiserver,
            lambda: self._ok("/api/v1/namespaces/default"),
        )

    def _wait_crds(self, names: Sequence[str] | None = None) -> None:
        names = list(names if names is not None else self.CRD_NAMES)

        def ready() -> bool:
            for name in names:
                status, crd = self._raw_request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                if status != 200:
                    return False
                # A CRD just created may answer "status": {"conditions": null} (seen once in a
                # benchmark's start-up): not ready yet, not an error.
                conditions = (crd.get("status") or {}).get("conditions") or []
                conds = {c["type"]: c["status"] for c in conditions}
                if conds.get("Established") != "True" or conds.get("NamesAccepted") != "True":
                    return False
                group = crd["spec"]["group"]
                plural = crd["spec"]["names"]["plural"]
                for v in crd["spec"]["versions"]:
                    if not v.get("served"):
                        continue
                    st, disc = self._raw_request("GET", f"/apis/{group}/{v['name']}")
                    if st != 200 or plural not in {r["name"] for r in disc.get("resources", [])}:
                        return False
            return True

        assert self._apiserver is not None
        self._wait("CRDs established and discoverable: " + ", ".join(names), self._apiserver, ready)

    def _ok(self, path: str) -> bool:
        try:
            status, _ = self._raw_request("GET", path, timeout=3)
        except OSError:
            return False
        return status == 200

    def _raw_request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _wait(
        self,
        what: str,
        proc: subprocess.Popen[bytes],
        check: Any,
        timeout: float | None = None,
    ) -> None:
        """Poll ``check()`` until true, the process dies, or the deadline passes."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        delay = 0.05
        while True:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{what}: process exited with code {proc.returncode}")
            try:
                if check():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{what}: not ready after {timeout or self.start_timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.harness.controlplane``: start, print how to reach it, wait for Ctrl-C."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--print-timing", action="store_true", help="start, print timings, stop")
    args = p.parse_args(argv)
    cp = ControlPlane(keep_dir=False)
    t0 = time.monotonic()
    cp.start()
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in cp.timings.items())
    print(f"control plane ready in {time.monotonic() - t0:.1f}s ({phases})", file=sys.stderr)
    if args.print_timing:
        t1 = time.monotonic()
        cp.stop()
        print(f"stopped in {time.monotonic() - t1:.1f}s", file=sys.stderr)
        return 0
    print(f"export KUBECONFIG={cp.kubeconfig}")
    print(f"# server {cp.server}; binaries in {cp.bin_dir}; Ctrl-C stops it", file=sys.stderr)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
