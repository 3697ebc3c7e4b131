"""The simulator's git smart-HTTP endpoint: a real ``git`` client clones and fetches with
a live access token of the provider, and is refused with anything else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from providersim import gitserving
from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import refresh


def git(*args: str, cwd: Path, sim, credentials: Path | None = None, check: bool = True):
    """Run the git client hermetically, trusting the simulator's CA, never prompting."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "GIT_SSL_CAINFO": sim.ca_file}
    if credentials is not None:  # as the workspace example configures git
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper",
                "GIT_CONFIG_VALUE_0": f"store --file={credentials}"}
    res = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert 0 == res.returncode, res.stderr
    return res


def credentials_file(tmp_path: Path, sim, token: str) -> Path:
    """What the operator's git-credentials output format holds for this provider."""
    path = tmp_path / "git-credentials"
    host = sim.url.removeprefix("https://")
    path.write_text(f"https://{gitserving.GIT_USER}:{token}@{host}\n")
    return path


@pytest.fixture
def repo(simulator) -> str:
    simulator.git.create("demo", {"README.md": "hello\n"})
    return "demo"


def test_git_clones_with_a_live_access_token(simulator, repo, tmp_path):
    """The credential helper hands git the token; the clone holds the served commit."""
    grant = simulator.issue_grant(CLIENT_ID)
    creds = credentials_file(tmp_path, simulator, grant.access_token)
    git("clone", "--quiet", simulator.git_url(repo), "work", cwd=tmp_path, sim=simulator, credentials=creds)
    head = git("rev-parse", "HEAD", cwd=tmp_path / "work", sim=simulator).stdout.strip()
    assert simulator.git.head(repo) == head
    assert "hello\n" == (tmp_path / "work" / "README.md").read_text()


def test_a_request_without_credentials_gets_a_basic_challenge(simulator, repo):
    """401 with WWW-Authenticate: Basic, which makes git ask its credential helper."""
    r = requests.get(simulator.git_url(repo) + "/info/refs?service=git-upload-pack",
                     verify=simulator.ca_file, timeout=10)
    assert (401, True) == (r.status_code, r.headers["www-authenticate"].startswith("Basic "))


@pytest.mark.parametrize("user, token", [
    pytest.param("x-access-token", "ghu_not-a-token-of-this-provider", id="an unknown token is refused"),
    pytest.param("someone", None, id="a live token under another user name is refused"),
])
def test_wrong_credentials_are_refused(simulator, repo, user, token):
    live = simulator.issue_grant(CLIENT_ID).access_token
    r = requests.get(simulator.git_url(repo) + "/info/refs?service=git-upload-pack",
                     auth=(user, token or live), verify=simulator.ca_file, timeout=10)
    assert 401 == r.status_code


def test_after_a_refresh_only_the_new_token_fetches(simulator, repo, tmp_path):
    """A refresh revokes the old access token: git fetch with it fails, with the new one it
    gets the commit made since the clone."""
    grant = simulator.issue_grant(CLIENT_ID)
    creds = credentials_file(tmp_path, simulator, grant.access_token)
    git("clone", "--quiet", simulator.git_url(repo), "work", cwd=tmp_path, sim=simulator, credentials=creds)
    new_commit = simulator.git.commit(repo, {"CHANGES.md": "more\n"}, message="second")
    fresh = refresh(simulator, grant.refresh_token).json()["access_token"]

    stale = git("fetch", "--quiet", cwd=tmp_path / "work", sim=simulator, credentials=creds, check=False)
    assert (128, True) == (stale.returncode, "Authentication failed" in stale.stderr)

    creds = credentials_file(tmp_path, simulator, fresh)
    git("fetch", "--quiet", cwd=tmp_path / "work", sim=simulator, credentials=creds)
    fetched = git("rev-parse", "origin/main", cwd=tmp_path / "work", sim=simulator).stdout.strip()
    assert new_commit == fetched


def test_an_expired_token_is_refused(simulator, repo):
    grant = simulator.issue_grant(CLIENT_ID)
    simulator.expire_access_token(grant.access_token)
    r = requests.get(simulator.git_url(repo) + "/info/refs?service=git-upload-pack",
                     auth=(gitserving.GIT_USER, grant.access_token), verify=simulator.ca_file, timeout=10)
    assert 401 == r.status_code


def test_push_is_refused(simulator, repo, tmp_path):
    grant = simulator.issue_grant(CLIENT_ID)
    creds = credentials_file(tmp_path, simulator, grant.access_token)
    git("clone", "--quiet", simulator.git_url(repo), "work", cwd=tmp_path, sim=simulator, credentials=creds)
    work = tmp_path / "work"
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "--quiet", "--allow-empty", "-m", "x",
        cwd=work, sim=simulator)
    before = simulator.git.head(repo)
    pushed = git("push", "--quiet", "origin", "main", cwd=work, sim=simulator, credentials=creds, check=False)
    assert (True, before) == (pushed.returncode != 0, simulator.git.head(repo))


@pytest.mark.parametrize("path, status", [
    pytest.param("/git/nope.git/info/refs?service=git-upload-pack", 404, id="an unknown repository is 404"),
    pytest.param("/git/demo.git/info/refs?service=git-receive-pack", 403, id="asking to push is 403"),
    pytest.param("/git/demo.git/HEAD", 404, id="the dumb protocol is not served"),
    pytest.param("/git/../demo.git/info/refs?service=git-upload-pack", 404,
                 id="a path that climbs out is not served"),
])
def test_only_fetching_known_repositories_is_served(simulator, repo, path, status):
    live = simulator.issue_grant(CLIENT_ID).access_token
    r = requests.get(simulator.url + path, auth=(gitserving.GIT_USER, live), verify=simulator.ca_file,
                     timeout=10, allow_redirects=False)
    assert status == r.status_code


def test_the_control_api_creates_repositories_and_commits(simulator, tmp_path):
    """POST /_sim/git/repos and /_sim/git/commits, for a simulator in its own process."""
    made = requests.post(simulator.url + "/_sim/git/repos", json={"name": "ctl", "files": {"a": "1"}},
                         verify=simulator.ca_file, timeout=30)
    added = requests.post(simulator.url + "/_sim/git/commits",
                          json={"name": "ctl", "files": {"b": "2"}, "message": "b"},
                          verify=simulator.ca_file, timeout=30)
    assert (201, 201, simulator.git.head("ctl")) == (made.status_code, added.status_code,
                                                      added.json()["commit"])


@pytest.mark.parametrize("output, expected", [
    pytest.param(b"Content-Type: text/plain\r\n\r\nbody", gitserving.Answer(200, {"content-type": "text/plain"},
                 b"body"), id="no Status header means 200"),
    pytest.param(b"Status: 403 Forbidden\nExpires: 0\n\nno", gitserving.Answer(403, {"expires": "0"}, b"no"),
                 id="a Status header sets the status, bare newlines are accepted"),
    pytest.param(b"garbage without a blank line", gitserving.Answer(
        502, {"content-type": "text/plain; charset=utf-8"}, b"bad CGI answer\n"), id="no header end is a 502"),
])
def test_cgi_answers_are_parsed(output, expected):
    assert expected == gitserving.parse_cgi(output)
