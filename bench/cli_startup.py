#!/usr/bin/env python3
"""CLI start-up benchmark: ``externalauth`` side by side with ``kubectl``.

    .venv/bin/python bench/cli_startup.py [--runs 30] [--cluster]

Runs each command ``--runs`` times (after two warm-up runs, one after the other, output
discarded) and prints the median, minimum and 90th percentile wall-clock time of each, the
median CPU time (user + system, of the process and its threads: steadier than wall time on
a shared machine), and the ratios of the medians:

- ``externalauth --version``      vs ``kubectl version --client``
- ``externalauth status --help``  vs ``kubectl get --help``
- ``externalauth __complete st``  (what one TAB costs)
- with ``--cluster``: ``externalauth status -n NS`` vs ``kubectl get externalauthlinks -n NS``
  against a real control plane (tests/harness) holding 10 links.

kubectl is the harness's (``hack/build-control-plane.sh``), or ``--kubectl PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "sim")]


def measure(cmd: list[str], *, runs: int, env: dict[str, str]) -> dict[str, float]:
    for _ in range(2):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
    times.sort()
    return {"median": statistics.median(times), "min": times[0], "p90": times[int(0.9 * (len(times) - 1))],
            "cpu_median": statistics.median(cpu)}


def kubectl_path(given: str | None) -> str:
    if given:
        return given
    from tests.harness.binaries import locate_binaries

    with open(os.devnull, "w") as quiet:
        return str(locate_binaries(stream=quiet).kubectl)


def pairs(exe: str, kubectl: str) -> list[tuple[str, list[str], list[str] | None]]:
    return [
        ("version", [exe, "--version"], [kubectl, "version", "--client"]),
        ("help", [exe, "status", "--help"], [kubectl, "get", "--help"]),
        ("one TAB", [exe, "__complete", "st"], None),
    ]


def cluster_pairs(exe: str, kubectl: str, stack: object) -> list[tuple[str, list[str], list[str] | None]]:
    """A control plane with 10 links in a namespace (torn down by ``stack``)."""
    from tests.harness.controlplane import ControlPlane

    cp = ControlPlane()
    stack.callback(cp.stop)  # type: ignore[attr-defined]
    cp.start()
    ns = "bench-cli"
    kc = str(cp.kubeconfig)
    cp.kubectl("create", "namespace", ns)
    links = [{"apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
              "metadata": {"name": f"link-{i}", "namespace": ns},
              "spec": {"providerName": "github", "secretName": f"link-{i}-token"}} for i in range(10)]
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": links}))
    return [("status (10 links)", [exe, "status", "-n", ns, "--kubeconfig", kc],
             [kubectl, "get", "externalauthlinks", "-n", ns, "--kubeconfig", kc])]


def main() -> int:
    import contextlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--kubectl", help="the kubectl to compare with (default: the harness's)")
    ap.add_argument("--cluster", action="store_true", help="also time `status` against a real control plane")
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "externalauth")
    kubectl = kubectl_path(args.kubectl)
    env = {**os.environ, "NO_COLOR": "1"}
    results = []
    with contextlib.ExitStack() as stack:
        todo = pairs(exe, kubectl) + (cluster_pairs(exe, kubectl, stack) if args.cluster else [])
        for what, ours, theirs in todo:
            mine = measure(ours, runs=args.runs, env=env)
            other = measure(theirs, runs=args.runs, env=env) if theirs else None
            results.append({"what": what, "externalauth": ours[1:], "kubectl": theirs[1:] if theirs else None,
                            "externalauth_s": mine, "kubectl_s": other,
                            "ratio_of_medians": round(mine["median"] / other["median"], 2) if other else None,
                            "ratio_of_cpu": round(mine["cpu_median"] / other["cpu_median"], 2) if other else None})
    print(f"{'':<18} {'externalauth':^30} {'kubectl':^30} {'ratio':^13}")
    print(f"{'what':<18} {'wall median (min)':>20} {'cpu':>9} {'wall median (min)':>20} {'cpu':>9} "
          f"{'wall':>6} {'cpu':>6}")
    for r in results:
        mine, other = r["externalauth_s"], r["kubectl_s"]
        ours_text = f"{mine['median']:.3f}s ({mine['min']:.3f}s) {mine['cpu_median']:8.3f}s"
        theirs = f"{other['median']:.3f}s ({other['min']:.3f}s) {other['cpu_median']:8.3f}s" if other else "-"
        ratios = f"{r['ratio_of_medians']:6.2f} {r['ratio_of_cpu']:6.2f}" if other else ""
        print(f"{r['what']:<18} {ours_text:>30} {theirs:>30} {ratios}")
    print(json.dumps({"benchmark": "cli_startup", "runs": args.runs, "python": platform.python_version(),
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
