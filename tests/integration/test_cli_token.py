"""``externalauth token`` against the real control plane: the token alone on stdout, and
nothing from a Secret that is not opted in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness.world import World

EXE = Path(sys.executable).parent / "externalauth"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60)


def test_token_prints_the_links_access_token_and_nothing_else(world: World, kubeconfig: Path) -> None:
    world.make_provider()
    data = world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    r = cli("-n", world.ns, "token", "gh", "--kubeconfig", str(kubeconfig))
    assert (0, data["access_token"] + "\n", "") == (r.returncode, r.stdout, r.stderr)


def test_token_of_a_secret_not_opted_in_prints_nothing_and_exits_4(world: World, kubeconfig: Path) -> None:
    """A link pointed at a Secret without the provider's label: the token stays where it is."""
    world.make_provider()
    world.make_token_secret("someone-elses", labels={})
    world.make_link("gh", secret="someone-elses")
    r = cli("token", "gh", "-n", world.ns, "--kubeconfig", str(kubeconfig))
    assert (4, "", True) == (r.returncode, r.stdout, f"externalauth.io/provider={world.provider}" in r.stderr)


def test_token_of_a_missing_link_is_one_line_and_exit_1(world: World, kubeconfig: Path) -> None:
    r = cli("token", "nosuch", "-n", world.ns, "--kubeconfig", str(kubeconfig))
    assert (1, "", [f"externalauth: error: ExternalAuthLink {world.ns}/nosuch not found"]) == (
        r.returncode, r.stdout, r.stderr.splitlines())
