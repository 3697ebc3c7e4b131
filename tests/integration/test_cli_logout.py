"""``externalauth logout`` against the running operator, the control plane and the HTTPS
simulator: the grant dead at the provider, the link gone, the Secret ``login`` created gone,
a Secret a user made kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from kubernetes.client import ApiException

from tests.harness.world import World
from tests.integration.test_cli import sign_in

EXE = Path(sys.executable).parent / "externalauth"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)


def _live(world: World, access_token: str) -> bool:
    r = requests.get(world.sim.validate_url, headers={"Authorization": f"Bearer {access_token}"},
                     verify=world.sim.ca_file, timeout=10)
    return r.status_code == 200


def _exists(read: Any) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def test_logout_revokes_and_deletes_the_link_and_the_secret_login_created(
        world: World, operator: Any, kubeconfig: Path) -> None:
    world.make_provider()
    rc, _, err = sign_in(world, kubeconfig, "--link", "gh")
    assert 0 == rc, err
    token = world.secret_data("gh-token")["access_token"]
    assert _live(world, token)
    r = cli("logout", "gh", "-n", world.ns, "--kubeconfig", str(kubeconfig), "--timeout", "60s")
    assert (0, True) == (r.returncode, "Grant revoked" in r.stdout), r.stderr
    assert (False, False, False, 1) == (
        _exists(lambda: world.link("gh")), _exists(lambda: world.secret("gh-token")), _live(world, token),
        world.sim.stats.grants_revoked_by_request)


def test_logout_keeps_a_secret_that_login_did_not_create(world: World, operator: Any, kubeconfig: Path) -> None:
    """A Secret the user wrote (opted in, but without login's annotation) stays; so does one
    kept with --keep-secret."""
    world.make_provider()
    world.make_token_secret("mine", expires_in=3600)
    world.make_link("gh", secret="mine")
    world.wait_condition("gh", "Ready", "True")
    r = cli("-n", world.ns, "logout", "gh", "--kubeconfig", str(kubeconfig), "--timeout", "60s")
    assert (0, True, False, True) == (r.returncode, "Secret mine kept: externalauth login did not create it"
                                      in r.stdout, _exists(lambda: world.link("gh")),
                                      _exists(lambda: world.secret("mine"))), r.stderr


def test_logout_keep_secret(world: World, operator: Any, kubeconfig: Path) -> None:
    world.make_provider()
    rc, _, err = sign_in(world, kubeconfig, "--link", "gh")
    assert 0 == rc, err
    r = cli("logout", "gh", "-n", world.ns, "--keep-secret", "--kubeconfig", str(kubeconfig), "--timeout", "60s")
    assert (0, True, True) == (r.returncode, "kept (--keep-secret)" in r.stdout,
                               _exists(lambda: world.secret("gh-token"))), r.stderr


def test_logout_with_no_operator_deletes_nothing_and_times_out(world: World, kubeconfig: Path) -> None:
    """Without an operator to revoke, nothing is deleted: exit 5."""
    world.make_provider()
    world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    r = cli("logout", "gh", "-n", world.ns, "--kubeconfig", str(kubeconfig), "--timeout", "3s")
    assert (5, True, True) == (r.returncode, "nothing was deleted" in r.stderr, _exists(lambda: world.link("gh")))
