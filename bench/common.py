"""Shared set-up for the benchmarks: a control plane, the simulator, a provider, token
Secrets and links, and the operator as the least-privileged user of deploy/rbac.yaml."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "sim")]

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.operator_fixtures import least_privileged_kubeconfig  # noqa: E402

from providersim import Simulator  # noqa: E402

CLIENT_ID, CLIENT_SECRET = "bench", "bench-secret"
STARTED = b"externalauth operator started"


class Recorders:
    """The py-spy recorders of one profile, stopped and awaited as one."""

    def __init__(self, spies: list[subprocess.Popen[bytes]]) -> None:
        self.spies = spies

    def send_signal(self, sig: int) -> None:
        for spy in self.spies:
            spy.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        return max(spy.wait(timeout) for spy in self.spies)


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process, from /proc (Linux)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def links_decided(port: int) -> int:
    """Links our operator has decided: ``externalauth_links`` summed, from its /metrics on
    ``port`` (0 while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # loopback
            text = r.read().decode()
    except OSError:
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("externalauth_links{")))

def wait_decided(port: int, n: int, *, timeout: float) -> float:
    """Seconds until the operator whose /metrics is on ``port`` has decided ``n`` links."""
    started = time.monotonic()
    while links_decided(port) < n:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"only {links_decided(port)} of {n} links decided after {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started



def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, cp: ControlPlane, sim: Simulator, namespace: str) -> None:
        self.cp, self.sim, self.ns = cp, sim, namespace
        api = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
        self.core, self.co = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        self.work = Path(tempfile.mkdtemp(prefix="externalauth-bench-"))
        self.operator: subprocess.Popen[bytes] | None = None

    def provider(self, *, concurrency: int = 10, validate: bool = False) -> None:
        self.sim.register_client(CLIENT_ID, CLIENT_SECRET)
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.core.create_namespaced_secret(self.ns, {"metadata": {"name": "client"},
                                                     "stringData": {"secret": CLIENT_SECRET}})
        self.co.create_cluster_custom_object("externalauth.io", "v1alpha1", "externalauthproviders", {
            "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthProvider",
            "metadata": {"name": "bench"},
            "spec": {"type": "github", "clientID": CLIENT_ID, "baseURL": self.sim.url,
                     "validateURL": f"{self.sim.url}/user" if validate else "",
                     "caBundle": self.sim.ca_pem, "maxConcurrentRefreshes": concurrency,
                     "clientSecretRef": {"namespace": self.ns, "name": "client", "key": "secret"}}})

    def links(self, count: int, *, expiry: str, threads: int = 16, validate: bool = False,
              secret_name: str = "tok-{}", link_name: str = "link-{}",  # noqa: S107 - name patterns
              namespaces: list[str] | None = None) -> dict[str, str]:
        """``count`` token Secrets (labelled) and links (``spec.validate`` as given), named by
        the ``secret_name`` and ``link_name`` patterns, round-robin over ``namespaces`` (by
        default the bench's own); returns Secret name -> refresh token (``ns/name`` keys when
        ``namespaces`` is given)."""
        tokens: dict[str, str] = {}

        def make(i: int) -> None:
            grant = self.sim.issue_grant(CLIENT_ID, login=f"user{i}")
            ns = namespaces[i % len(namespaces)] if namespaces else self.ns
            tokens[f"{ns}/{secret_name.format(i)}" if namespaces else secret_name.format(i)] = grant.refresh_token
            self.core.create_namespaced_secret(ns, {
                "metadata": {"name": secret_name.format(i), "labels": {"externalauth.io/provider": "bench"}},
                "stringData": {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                               "expiry": expiry}})
            self.co.create_namespaced_custom_object("externalauth.io", "v1alpha1", ns, "externalauthlinks", {
                "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
                "metadata": {"name": link_name.format(i)},
                "spec": {"providerName": "bench", "secretName": secret_name.format(i), "validate": validate}})

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(make, range(count)))
        return tokens

    def server_pids(self) -> list[int]:
        """kube-apiserver and etcd (the harness keeps their processes)."""
        return [p.pid for p in (self.cp._apiserver, self.cp._etcd) if p is not None]

    def api_cpu_seconds(self) -> float:
        """CPU time used so far by kube-apiserver and etcd together."""
        return sum(cpu_seconds(pid) for pid in self.server_pids())

    def profile(self, pid: int, out: str, *, rate: int = 100) -> Recorders:
        """py-spy recording ``pid`` (``rate`` samples a second) until it is sent SIGINT.

        ``out`` ending in .json is a speedscope profile, anything else a flame graph; beside
        a flame graph a second recorder writes the collapsed stacks to ``out + ".txt"``, the
        input of bench/profile_top.py (top functions by own and inclusive samples). py-spy is
        installed into this environment the first time it is needed (the `bench` extra)."""
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy>=0.4"], check=True)
        how = [("speedscope", out)] if out.endswith(".json") else [("flamegraph", out), ("raw", out + ".txt")]
        spies = [subprocess.Popen([str(spy), "record", "--pid", str(pid), "--output", path, "--rate", str(rate),
                                   "--gil", "--nonblocking", "--format", fmt],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for fmt, path in how]
        return Recorders(spies)

    def start_operator(self, *extra: str) -> subprocess.Popen[bytes]:
        kubeconfig = least_privileged_kubeconfig(self.cp, "bench-operator")
        self.log = self.work / "operator.log"
        started = self.log.read_bytes().count(STARTED) if self.log.exists() else 0
        out = open(self.log, "ab")
        self.operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "externalauth"), "run", "-n", self.ns, "--operator-namespace", self.ns,
             "--kubeconfig", str(kubeconfig), *(extra or ("--metrics-port", "0"))],
            stdout=out, stderr=subprocess.STDOUT)
        while self.log.read_bytes().count(STARTED) <= started:  # this start, not an earlier one
            if self.operator.poll() is not None:
                raise SystemExit(f"the operator exited; see {self.log}")
            time.sleep(0.05)
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            self.operator.wait(60)


OUR_RESOURCES = ("secrets", "externalauthlinks", "externalauthproviders", "events")
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
READ_VERBS = ("GET", "LIST")
Requests = collections.Counter[tuple[str, str, str]]


def api_requests(b: Bench) -> Requests:
    """kube-apiserver's ``apiserver_request_total`` for the resources the operators use,
    by (verb, resource[/subresource], HTTP code)."""
    _, text = b.cp.request("GET", "/metrics", timeout=30)
    counts: Requests = collections.Counter()
    for line in str(text).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("resource") in OUR_RESOURCES:
            what = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            counts[(labels["verb"], what, labels["code"])] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def request_figures(before: Requests, after: Requests, *, own_lists: int = 0) -> dict[str, Any]:
    """Requests between two snapshots, less the ``own_lists`` LISTs of Secrets this script
    made (all answered 200). Writes and reads count every answer, 409 Conflicts included."""
    delta = after - before
    delta[("LIST", "secrets", "200")] -= own_lists
    delta = +delta
    return {"writes": sum(n for (verb, _, _), n in delta.items() if verb in WRITE_VERBS),
            "reads": sum(n for (verb, _, _), n in delta.items() if verb in READ_VERBS),
            "conflicts": sum(n for (_, _, code), n in delta.items() if code == "409"),
            "by_verb_resource_code": {" ".join(key): n for key, n in sorted(delta.items())}}



@contextlib.contextmanager
def bench(namespace: str, **sim_kwargs: Any) -> Iterator[Bench]:
    with ControlPlane() as cp, Simulator(mode="github", **sim_kwargs) as sim:
        b = Bench(cp, sim, namespace)
        try:
            yield b
        finally:
            b.stop_operator()
