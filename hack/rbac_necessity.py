#!/usr/bin/env python3
"""Is every rule of the operator's ClusterRole needed? (issue #9: "removing any single RBAC
rule makes some test fail, or the rule goes".)

    .venv/bin/python hack/rbac_necessity.py

For each rule of deploy/rbac.yaml's ClusterRole (the chart's default ClusterRole has the
same rules, tests/integration/test_chart.py checks it), starts the operator as a user
bound to the role WITHOUT that rule, on a fresh namespace with a provider and a due
link, and checks the core flow within a deadline: the provider's status written, the
token refreshed into the Secret, the link's status Ready, a Refreshed event. Prints, per
rule, what broke. A rule whose removal breaks nothing is reported as unneeded (exit 1).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "sim"), str(ROOT / "bench")]

from common import CLIENT_ID, STARTED, bench  # noqa: E402

RBAC = ROOT / "deploy" / "rbac.yaml"
DEADLINE = 45.0


def checks(b: object, ns: str, before: str) -> dict[str, bool]:
    core, co = b.core, b.co  # type: ignore[attr-defined]
    provider = co.get_cluster_custom_object("externalauth.io", "v1alpha1", "externalauthproviders", "bench")
    link = co.get_namespaced_custom_object("externalauth.io", "v1alpha1", ns, "externalauthlinks", "link")
    ready = next((c for c in (link.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    secret = core.read_namespaced_secret("tok", ns)
    events = [e.reason for e in core.list_namespaced_event(ns).items]
    return {
        "provider status written": bool((provider.get("status") or {}).get("conditions")),
        "token refreshed": base64.b64decode(secret.data["refresh_token"]).decode() != before,
        "link Ready": ready.get("status") == "True",
        "Refreshed event": "Refreshed" in events,
    }


def main() -> int:
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "ClusterRole")
    results = []
    for index, rule in enumerate([None, *role["rules"]]):
        name = "all rules" if rule is None else f"{','.join(rule['resources'])}: {','.join(rule['verbs'])}"
        with bench(f"rbac-{index}", access_token_lifetime=3600) as b:
            b.provider()
            reduced = {**role, "metadata": {"name": f"reduced-{index}"},
                       "rules": [r for r in role["rules"] if r is not rule]}
            user = f"reduced-{index}"
            binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "metadata": {"name": user},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                   "name": reduced["metadata"]["name"]},
                       "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
            b.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([reduced, binding]))
            kubeconfig = b.cp.mint_user(user)
            grant = b.sim.issue_grant(CLIENT_ID, login="alice")
            due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
            b.core.create_namespaced_secret(b.ns, {
                "metadata": {"name": "tok", "labels": {"externalauth.io/provider": "bench"}},
                "stringData": {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                               "expiry": due}})
            b.co.create_namespaced_custom_object("externalauth.io", "v1alpha1", b.ns, "externalauthlinks", {
                "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink", "metadata": {"name": "link"},
                "spec": {"providerName": "bench", "secretName": "tok", "validate": False}})
            log = b.work / "operator.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "externalauth"), "run", "-n", b.ns, "--operator-namespace",
                     b.ns, "--kubeconfig", str(kubeconfig), "--metrics-port", "0"],
                    stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + DEADLINE
            got: dict[str, bool] = {}
            while time.monotonic() < deadline:
                got = checks(b, b.ns, grant.refresh_token)
                if all(got.values()):
                    break
                time.sleep(0.5)
            proc.terminate()
            proc.wait(30)
            started = STARTED in log.read_bytes()
            broken = [k for k, ok in got.items() if not ok] + ([] if started else ["operator start"])
            results.append({"without": name, "broken": broken})
            print(json.dumps(results[-1]), flush=True)
    baseline_ok = not results[0]["broken"]
    unneeded = [r["without"] for r in results[1:] if not r["broken"]]
    print(json.dumps({"baseline_ok": baseline_ok, "unneeded_rules": unneeded}))
    return 0 if baseline_ok and not unneeded else 1


if __name__ == "__main__":
    sys.exit(main())
