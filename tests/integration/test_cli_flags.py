"""The Kubernetes flags of ``externalauth`` against the real control plane: before or after
the command, impersonation as RBAC sees it, and a refused credential as exit 4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.harness.world import World

EXE = Path(sys.executable).parent / "externalauth"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60)


def test_global_flags_work_before_and_after_the_command(world: World, kubeconfig: Path) -> None:
    """`externalauth -n NS --kubeconfig K status` prints what `status -n NS --kubeconfig K` prints."""
    world.make_provider()
    world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    before = cli("-n", world.ns, "--kubeconfig", str(kubeconfig), "--request-timeout", "30s", "status")
    after = cli("status", "-n", world.ns, "--kubeconfig", str(kubeconfig), "--request-timeout", "30")
    assert (0, 0, True) == (before.returncode, after.returncode, before.stdout == after.stdout), before.stderr
    assert ["gh"] == [line.split()[0] for line in before.stdout.splitlines()[1:]]


def _grant_list(k8s_api: Any, namespace: str, user: str) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(k8s_api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "links-reader"},
        "rules": [{"apiGroups": ["externalauth.io"], "resources": ["externalauthlinks"],
                   "verbs": ["list", "watch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "links-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "links-reader"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})


def test_as_acts_as_that_user_for_rbac(world: World, kubeconfig: Path, k8s_api: Any) -> None:
    """--as carol is refused as carol (403, exit 1) until a RoleBinding lets carol list links."""
    world.make_provider()
    world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    refused = cli("--as", "carol", "status", "-n", world.ns, "--kubeconfig", str(kubeconfig))
    assert (1, True) == (refused.returncode, 'User "carol" cannot list' in refused.stderr), refused.stderr
    _grant_list(k8s_api, world.ns, "carol")
    allowed = cli("status", "-n", world.ns, "--as", "carol", "--kubeconfig", str(kubeconfig))
    assert (0, ["gh"]) == (allowed.returncode, [ln.split()[0] for ln in allowed.stdout.splitlines()[1:]]), \
        allowed.stderr


def test_as_group_is_sent_as_every_group(world: World, kubeconfig: Path, k8s_api: Any) -> None:
    """Two --as-group flags (one before, one after the command) make two groups: the second grants."""
    world.make_provider()
    world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(k8s_api)
    _grant_list(k8s_api, world.ns, "nobody-at-all")
    rbac.patch_namespaced_role_binding("links-reader", world.ns, {"subjects": [
        {"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]})
    r = cli("--as", "dave", "--as-group", "others", "status", "-n", world.ns, "--as-group", "readers",
            "--kubeconfig", str(kubeconfig))
    assert 0 == r.returncode, r.stderr


def test_credentials_the_api_server_refuses_exit_4(world: World, kubeconfig: Path, tmp_path: Path) -> None:
    """A kubeconfig whose token the API server does not know: 401, exit 4 (sign in again, as gh)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-token-the-api-server-knows"}
    stale = tmp_path / "stale.kubeconfig"
    stale.write_text(yaml.safe_dump(config))
    r = cli("status", "-n", world.ns, "--kubeconfig", str(stale))
    assert (4, True) == (r.returncode, "unauthorized (HTTP 401" in r.stderr), r.stderr
