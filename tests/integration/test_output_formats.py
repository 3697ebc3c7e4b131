"""outputFormats (contract §3): the keys are right for the real tools that read them, and they
are written in the same compare-and-swap write as the token they carry."""

from __future__ import annotations

import base64
import http.server
import netrc
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from externalauth.model import formats
from externalauth.model.secure import SecretStr
from tests.harness.waiting import wait_for
from tests.harness.world import World

FORMATS = ["git-credentials", "netrc", "gh-hosts"]
KEYS = ["git-credentials", "netrc", "gh-hosts.yml"]


def host_of(world: World) -> str:
    return world.sim.url.removeprefix("https://")


def formatted_link(world: World, **spec: Any) -> dict[str, str]:
    """A Ready link with every output format, whose Secret has been refreshed once."""
    world.make_provider()
    world.make_token_secret("tok", expires_in=3600)
    world.make_link("link", secret="tok", outputFormats=FORMATS, **spec)
    world.wait_condition("link", "Ready", "True")
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    return world.secret_data("tok")


def test_format_keys_appear_without_waiting_for_a_refresh(world: World, operator: Any) -> None:
    """A new link gets its format keys for the token already in the Secret."""
    world.make_provider()
    data = world.make_token_secret("tok", expires_in=3600)
    world.make_link("link", secret="tok", outputFormats=FORMATS)
    stored = wait_for(lambda: (d := world.secret_data("tok")) and all(k in d for k in KEYS) and d,
                      timeout=20, message="the format keys")
    assert data["access_token"] in stored["git-credentials"]
    assert 0 == world.sim.stats.token_calls


def test_git_credential_fill_returns_the_token(world: World, operator: Any, tmp_path: Path) -> None:
    """git's store helper, reading the key as a mounted file, answers with the current token."""
    data = formatted_link(world)
    store = tmp_path / "git-credentials"
    store.write_text(data["git-credentials"])
    result = subprocess.run(
        ["git", "-c", f"credential.helper=store --file={store}", "credential", "fill"],
        input=f"protocol=https\nhost={host_of(world)}\n\n", capture_output=True, text=True,
        timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0"},
    )
    assert 0 == result.returncode, result.stderr
    answer = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert ("x-access-token", data["access_token"]) == (answer["username"], answer["password"])


def test_netrc_parses_with_the_token(world: World, operator: Any, tmp_path: Path) -> None:
    """The netrc key parses with Python's netrc (what requests and many tools use)."""
    data = formatted_link(world)
    path = tmp_path / "netrc"
    path.write_text(data["netrc"])
    path.chmod(0o600)
    login, _, password = netrc.netrc(str(path)).authenticators("127.0.0.1") or (None, None, None)
    assert ("x-access-token", data["access_token"]) == (login, password)


def test_gh_hosts_yml_is_read_by_the_github_cli(world: World, operator: Any, tmp_path: Path) -> None:
    """gh-hosts.yml, as GH_CONFIG_DIR/hosts.yml, gives `gh auth token` the current token."""
    data = formatted_link(world)
    hosts = yaml.safe_load(data["gh-hosts.yml"])
    assert {"oauth_token": data["access_token"], "git_protocol": "https"}.items() <= hosts[host_of(world)].items()
    gh = shutil.which("gh")
    if gh is None:
        pytest.skip("the GitHub CLI (gh) is not installed here: .ci/run installs it (apt package gh)")
    (tmp_path / "hosts.yml").write_text(data["gh-hosts.yml"])
    result = subprocess.run([gh, "auth", "token", "--hostname", host_of(world)], capture_output=True,
                            text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GH_CONFIG_DIR": str(tmp_path)})
    assert 0 == result.returncode, result.stderr
    assert data["access_token"] == result.stdout.strip()


def test_every_refresh_rewrites_the_formats_with_the_new_token(world: World, operator: Any) -> None:
    """After each refresh, every format key carries the access_token stored beside it."""
    first = formatted_link(world)
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    second = world.secret_data("tok")
    assert first["access_token"] != second["access_token"]
    assert [] == [k for k in KEYS if second["access_token"] not in second[k]]


VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    """A plain-HTTP server on loopback that records each request's Authorization header."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("token", [
    pytest.param("gho_CANARY\nmachine 127.0.0.1 login injected password x", id="a token that adds a machine entry"),
    pytest.param("gho_CANARY\nlogin injected password x", id="a token that adds a login"),
    pytest.param(VISIBLE, id="every visible ASCII character"),
    pytest.param("#gho_CANARY", id="a token starting with a hash"),
    pytest.param('"gho_CANARY"', id="a token in double quotes"),
    pytest.param("gho\\CANARY", id="a backslash"),
])
def test_curl_sends_the_stored_token_or_nothing(recorder: tuple[str, list[str | None]], tmp_path: Path,
                                                token: str) -> None:
    """The netrc key, read by real curl: the user and token exactly (rendered), or no credentials
    at all (a token that could change the file's structure renders no netrc key)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed here")
    host, seen = recorder
    keys = formats.render_keys([formats.OutputFormat.NETRC], host=host, username="x-access-token",
                               token=SecretStr(token))
    path = tmp_path / "netrc"
    path.write_text(base64.b64decode(keys["netrc"]).decode() if "netrc" in keys else "")
    path.chmod(0o600)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--netrc-file", str(path), f"http://{host}/"],
                   check=True, timeout=30)
    sent = base64.b64decode(seen[0].split()[1]).decode() if seen[0] else None
    parsed = netrc.netrc(str(path)).hosts
    visible_ascii = all(0x21 <= ord(c) < 0x7F for c in token)
    expected = f"x-access-token:{token}" if visible_ascii else None
    assert (expected, ["127.0.0.1"] if expected else []) == (sent, list(parsed))
