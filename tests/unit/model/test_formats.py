"""Output formats (contract §3): a token's value never changes a file's structure. Each file is
read back with the parser its tools use (Python's netrc, PyYAML, URL decoding)."""

from __future__ import annotations

import base64
import netrc
import string
import urllib.parse
from pathlib import Path

import pytest
import yaml

from externalauth.model import formats
from externalauth.model.formats import OutputFormat
from externalauth.model.secure import SecretStr

ALL = [OutputFormat.GIT_CREDENTIALS, OutputFormat.NETRC, OutputFormat.GH_HOSTS]
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
INJECTION = "gho_CANARY\nmachine 127.0.0.1 login injected password x"


@pytest.mark.parametrize("token", [
    pytest.param(INJECTION, id="a newline followed by a netrc machine entry"),
    pytest.param("gho_CANARY with spaces", id="spaces"),
    pytest.param("gho_CANARY\tx", id="a tab"),
    pytest.param("gho_CANARY\r\nx", id="CRLF"),
    pytest.param("gho_CANARY\x00", id="a NUL"),
    pytest.param("gho_CANARY\x1b[2J", id="an ANSI escape"),
    pytest.param("gho_CANARY\x7f", id="DEL"),
    pytest.param("gho_CANARY\u0085x", id="NEL"),
    pytest.param("gho_CANARY\u2028x", id="a line separator"),
    pytest.param("gho_CANARYé", id="a non-ASCII letter"),
    pytest.param("gho_CANARY😀", id="an emoji"),
])
def test_unsafe_tokens_render_no_format_and_ask_to_remove_the_keys(token: str) -> None:
    rendering = formats.render_all(ALL, host="ghe.example", username="x-access-token", token=SecretStr(token))
    assert ({"git-credentials": None, "netrc": None, "gh-hosts.yml": None}, formats.TOKEN_PROBLEM) == (
        rendering.keys, rendering.problem)
    assert {} == formats.render_keys(ALL, host="ghe.example", username="x-access-token", token=SecretStr(token))


def test_no_formats_requested_renders_nothing() -> None:
    assert formats.Rendering({}) == formats.render_all([], host="h", username="u", token=SecretStr("a b"))


def test_a_host_with_a_space_renders_no_format() -> None:
    rendering = formats.render_all(ALL, host="gh e.example", username="u", token=SecretStr("gho_x"))
    assert formats.HOST_PROBLEM == rendering.problem


def decoded(rendering: formats.Rendering, key: str) -> str:
    value = rendering.keys[key]
    assert value is not None
    return base64.b64decode(value).decode()


@pytest.mark.parametrize("token", [
    pytest.param("gho_16C7e42F292c6912E7710c838347Ae178B4a", id="a GitHub token"),
    pytest.param("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl-_", id="a JWT"),
    pytest.param("ya29.a0AfH6SMB~x+y/z==", id="b64token characters and padding"),
    pytest.param(VISIBLE, id="every visible ASCII character"),
    pytest.param('"quoted"', id="a token in double quotes"),
    pytest.param("#hash", id="a token starting with a hash"),
    pytest.param("back\\slash", id="a backslash"),
    pytest.param("machine", id="a netrc keyword"),
])
def test_netrc_reads_back_the_token(tmp_path: Path, token: str) -> None:
    rendering = formats.render_all(ALL, host="ghe.example:8443", username="x-access-token", token=SecretStr(token))
    path = tmp_path / "netrc"
    path.write_text(decoded(rendering, "netrc"))
    parsed = netrc.netrc(str(path))
    assert (["ghe.example"], ("x-access-token", "", token)) == (
        list(parsed.hosts), parsed.authenticators("ghe.example"))


@pytest.mark.parametrize(("host", "machine"), [
    pytest.param("ghe.example:8443", "ghe.example", id="the port is dropped"),
    pytest.param("ghe.example", "ghe.example", id="no port"),
    pytest.param("[2001:db8::1]:8443", "2001:db8::1", id="an IPv6 host with a port loses brackets and port"),
    pytest.param("[::1]", "::1", id="an IPv6 host without a port loses its brackets"),
])
def test_netrc_machine_is_the_host_name(tmp_path: Path, host: str, machine: str) -> None:
    rendering = formats.render_all([OutputFormat.NETRC], host=host, username="oauth2", token=SecretStr("t"))
    path = tmp_path / "netrc"
    path.write_text(decoded(rendering, "netrc"))
    assert [machine] == list(netrc.netrc(str(path)).hosts)


@pytest.mark.parametrize(("host", "username", "token", "line"), [
    pytest.param("ghe.example:8443", "x-access-token", "t/k", "https://x-access-token:t%2Fk@ghe.example:8443\n",
                 id="the token is percent-encoded"),
    pytest.param("[2001:db8::1]:8443", "oauth2", "t", "https://oauth2:t@[2001:db8::1]:8443\n",
                 id="an IPv6 host keeps its brackets"),
    pytest.param("ghe.example", "us@r:x", "t", "https://us%40r%3Ax:t@ghe.example\n",
                 id="the user name is percent-encoded"),
    pytest.param("ghe%example", "u", "t", "https://u:t@ghe%25example\n", id="a host with a percent is encoded"),
])
def test_git_credentials_encode_every_part(host: str, username: str, token: str, line: str) -> None:
    rendering = formats.render_all([OutputFormat.GIT_CREDENTIALS], host=host, username=username,
                                   token=SecretStr(token))
    assert line == decoded(rendering, "git-credentials")


def test_git_credentials_round_trip_every_visible_character() -> None:
    rendering = formats.render_all([OutputFormat.GIT_CREDENTIALS], host="h", username="u", token=SecretStr(VISIBLE))
    url = urllib.parse.urlsplit(decoded(rendering, "git-credentials").strip())
    assert (VISIBLE, "h") == (urllib.parse.unquote(url.password or ""), url.hostname)


@pytest.mark.parametrize("account", [
    pytest.param("octo😀", id="an astral character stays one character"),
    pytest.param("octo\n    oauth_token: stolen", id="a newline cannot add a key"),
    pytest.param('octo" : x', id="a double quote"),
    pytest.param("!!python/object:os.system", id="a YAML tag"),
    pytest.param("&anchor *alias", id="anchors"),
    pytest.param("null", id="the word null"),
    pytest.param("octo\u0085x", id="NEL is not folded"),
    pytest.param("octo\u2028x", id="a line separator is not folded"),
    pytest.param("octo\x7f\x9b", id="DEL and a C1 control"),
    pytest.param("octo\ufeff", id="a byte-order mark"),
])
def test_gh_hosts_keep_the_account_exactly(account: str) -> None:
    rendering = formats.render_all([OutputFormat.GH_HOSTS], host="ghe.example:8443", username="x",
                                   token=SecretStr(VISIBLE), account=account)
    hosts = yaml.safe_load(decoded(rendering, "gh-hosts.yml"))
    assert {"ghe.example:8443": {"user": account, "oauth_token": VISIBLE, "git_protocol": "https"}} == hosts


def test_gh_hosts_replace_a_lone_surrogate() -> None:
    """A lone surrogate cannot be written as UTF-8: it becomes U+FFFD instead of crashing the render."""
    rendering = formats.render_all([OutputFormat.GH_HOSTS], host="h", username="x", token=SecretStr("t"),
                                   account="octo\ud83d")
    assert "octo\ufffd" == yaml.safe_load(decoded(rendering, "gh-hosts.yml"))["h"]["user"]


def test_every_visible_ascii_character_is_a_safe_token() -> None:
    assert all(formats.safe_token(c) for c in VISIBLE)
    assert not any(formats.safe_token(c) for c in string.whitespace)


def test_rendering_one_format_refuses_an_unsafe_token_without_showing_it() -> None:
    with pytest.raises(ValueError) as e:
        formats.render(OutputFormat.NETRC, host="h", username="u", token=SecretStr(INJECTION))
    assert "CANARY" not in str(e.value)
