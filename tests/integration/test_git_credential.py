"""``externalauth git-credential`` as git runs it: a real ``git`` clones and fetches from the
simulator's git smart-HTTP endpoint with ``credential.helper externalauth``, reading the token
from a directory laid out as a mounted Secret, across a refresh that revokes the old token;
and with ``credential-cache`` in front of it."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from providersim import gitserving
from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import refresh

BIN = str(Path(sys.executable).parent)


def git_version() -> tuple[int, int]:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    assert match is not None
    return int(match.group(1)), int(match.group(2))


class Workspace:
    """A home folder with git configured as a workspace would be, and the Secret's files."""

    def __init__(self, root: Path, sim: Any, helpers: list[str]) -> None:
        self.root, self.sim = root, sim
        self.secret = root / "token"
        self.secret.mkdir()
        self.env = {"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": str(root), "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "GIT_SSL_CAINFO": sim.ca_file,
                    "EXTERNALAUTH_SECRET_DIR": str(self.secret), "GIT_CONFIG_COUNT": str(len(helpers))}
        for i, helper in enumerate(helpers):
            self.env |= {f"GIT_CONFIG_KEY_{i}": "credential.helper", f"GIT_CONFIG_VALUE_{i}": helper}

    def mount(self, token: str, *, expires_at: dt.datetime | None = None) -> None:
        """What the kubelet does after the operator wrote the Secret: new files, swapped in at once."""
        host = self.sim.url.removeprefix("https://")
        files = {"access_token": token, "git-credentials": f"https://{gitserving.GIT_USER}:{token}@{host}\n"}
        if expires_at is not None:
            files["expiry"] = expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif (self.secret / "expiry").exists():
            (self.secret / "expiry").unlink()
        for name, content in files.items():
            (self.secret / f".{name}.new").write_text(content)
            os.replace(self.secret / f".{name}.new", self.secret / name)

    def git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd or self.root, env=self.env, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture
def repo(simulator: Any) -> str:
    simulator.git.create("demo", {"README.md": "hello\n"})
    return "demo"


def test_git_fetches_across_a_refresh_with_the_helper(simulator: Any, repo: str, tmp_path: Path) -> None:
    """The helper reads the files at each call: after the refresh revoked the old token and the
    files changed, the next fetch uses the new token with no other step."""
    ws = Workspace(tmp_path, simulator, ["externalauth"])  # git runs `git credential-externalauth get`
    grant = simulator.issue_grant(CLIENT_ID)
    ws.mount(grant.access_token)
    clone = ws.git("clone", "--quiet", simulator.git_url(repo), "work")
    assert 0 == clone.returncode, clone.stderr
    commit = simulator.git.commit(repo, {"CHANGES.md": "more\n"}, message="second")
    fresh = refresh(simulator, grant.refresh_token).json()["access_token"]  # the old token is revoked
    ws.mount(fresh)
    fetch = ws.git("fetch", "--quiet", cwd=tmp_path / "work")
    assert 0 == fetch.returncode, fetch.stderr
    assert commit == ws.git("rev-parse", "origin/main", cwd=tmp_path / "work").stdout.strip()


def test_the_long_form_works_too(simulator: Any, repo: str, tmp_path: Path) -> None:
    """`!externalauth git-credential --secret-dir DIR`, as the contract names the command."""
    secret = tmp_path / "token"
    ws = Workspace(tmp_path, simulator, [f"!externalauth git-credential --secret-dir {secret}"])
    ws.env.pop("EXTERNALAUTH_SECRET_DIR")
    ws.mount(simulator.issue_grant(CLIENT_ID).access_token)
    clone = ws.git("clone", "--quiet", simulator.git_url(repo), "work")
    assert 0 == clone.returncode, clone.stderr


def test_credential_cache_in_front_gives_way_to_the_new_token(simulator: Any, repo: str, tmp_path: Path) -> None:
    """credential-cache keeps what the helper answered. git 2.41 and later also keep
    password_expiry_utc and drop the token once it passed, so the first fetch after it already
    asks the helper; older git cannot know, uses the old token once, is refused, erases it from
    the cache, and the next fetch gets the new one from the helper."""
    socket = tmp_path / "cache.sock"
    ws = Workspace(tmp_path, simulator, [f"cache --timeout=3600 --socket={socket}", "externalauth"])
    try:
        grant = simulator.issue_grant(CLIENT_ID)
        expires_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
        ws.mount(grant.access_token, expires_at=expires_at)
        clone = ws.git("clone", "--quiet", simulator.git_url(repo), "work")
        assert 0 == clone.returncode, clone.stderr
        fresh = refresh(simulator, grant.refresh_token).json()["access_token"]
        ws.mount(fresh, expires_at=expires_at + dt.timedelta(hours=1))
        while dt.datetime.now(dt.UTC) <= expires_at + dt.timedelta(seconds=1):  # the old token's expiry passes
            time.sleep(0.1)
        first = ws.git("fetch", "--quiet", cwd=tmp_path / "work")
        second = ws.git("fetch", "--quiet", cwd=tmp_path / "work")
        knows_expiry = git_version() >= (2, 41)
        assert (0 if knows_expiry else 128, 0) == (first.returncode, second.returncode), (first.stderr, second.stderr)
    finally:
        ws.git("credential-cache", f"--socket={socket}", "exit")
