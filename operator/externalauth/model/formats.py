"""Ready-to-mount credential files (contract §3, ``outputFormats``). Pure.

A token's value never changes a file's structure: files are rendered only for
tokens of visible ASCII without whitespace (RFC 6750 ``b64token`` plus the other
printable characters real providers use), and every value is escaped the way the
tools that read the file expect (percent-encoding for git, quoting for netrc,
JSON-style double quotes for YAML). For any other token :func:`render_all` asks
for the format keys to be removed and says why.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re
import urllib.parse

from externalauth.model.secure import SecretStr


class OutputFormat(enum.StrEnum):
    GIT_CREDENTIALS = "git-credentials"
    NETRC = "netrc"
    GH_HOSTS = "gh-hosts"


KEYS = {
    OutputFormat.GIT_CREDENTIALS: "git-credentials",
    OutputFormat.NETRC: "netrc",
    OutputFormat.GH_HOSTS: "gh-hosts.yml",
}

_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
TOKEN_PROBLEM = ("the access token contains characters other than visible ASCII (whitespace, control "
                 "or non-ASCII characters), so no output format is written for it")
HOST_PROBLEM = "the provider's host or user name contains whitespace or control characters"


@dataclasses.dataclass(frozen=True)
class Rendering:
    """Secret ``data`` entries for the requested formats.

    ``keys`` maps each format key to its base64 content, or to None when the key
    must be removed (a strategic-merge/JSON-merge patch deletes a key set to null);
    ``problem`` says why nothing was rendered (a stable message without values).
    """

    keys: dict[str, str | None]
    problem: str | None = None


def safe_token(token: str) -> bool:
    """Whether a token may go into a credential file: visible ASCII, no whitespace."""
    return bool(_VISIBLE_ASCII.match(token))


def _hostname(host: str) -> str:
    """The host name alone: no port, no IPv6 brackets (what curl matches netrc against)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _netrc_value(value: str) -> str:
    """Quoted (curl >= 7.84 and Python's netrc both read ``"..."`` with backslash
    escapes) only when needed, so that older readers keep working for plain values."""
    if value.startswith(("#", '"')) or "\\" in value or '"' in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _yaml_string(value: str) -> str:
    """A YAML double-quoted scalar holding exactly ``value``: JSON quoting with non-ASCII
    kept as is (astral characters intact: YAML has no surrogate pairs), plus escapes for
    what YAML would fold or refuse raw (DEL, C1 controls, NEL, line/paragraph separators)."""
    text = json.dumps(_SURROGATE.sub("\ufffd", value), ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render(fmt: OutputFormat, *, host: str, username: str, token: SecretStr,
           account: str | None = None) -> str:
    """The file content for one format. ``host`` may carry a port (``git.example:8443``,
    ``[2001:db8::1]:8443``). Raises ValueError for a token or host that is not visible
    ASCII (:func:`render_all` checks first and says why instead)."""
    secret = token.reveal()
    if not (safe_token(secret) and _VISIBLE_ASCII.match(host) and _VISIBLE_ASCII.match(username)):
        raise ValueError("only visible ASCII without whitespace can be written into a credential file")
    if fmt is OutputFormat.GIT_CREDENTIALS:
        user = urllib.parse.quote(username, safe="")
        password = urllib.parse.quote(secret, safe="")
        where = urllib.parse.quote(host, safe="[]:")
        return f"https://{user}:{password}@{where}\n"
    if fmt is OutputFormat.NETRC:
        machine, login = _netrc_value(_hostname(host)), _netrc_value(username)
        return f"machine {machine} login {login} password {_netrc_value(secret)}\n"
    # gh-hosts: GitHub CLI hosts.yml.
    lines = [
        f"{_yaml_string(host)}:",
        f"    user: {_yaml_string(account or username)}",
        f"    oauth_token: {_yaml_string(secret)}",
        "    git_protocol: https",
    ]
    return "\n".join(lines) + "\n"


def render_all(formats: list[OutputFormat], *, host: str, username: str, token: SecretStr,
               account: str | None = None) -> Rendering:
    """Every requested format's key: its base64 content, or (for a token or host that
    could change a file's structure) None everywhere plus the problem."""
    if not formats:
        return Rendering({})
    problem = None
    if not safe_token(token.reveal()):
        problem = TOKEN_PROBLEM
    elif not (_VISIBLE_ASCII.match(host) and _VISIBLE_ASCII.match(username)):
        problem = HOST_PROBLEM
    if problem is not None:
        return Rendering({KEYS[f]: None for f in formats}, problem)
    return Rendering({
        KEYS[f]: base64.b64encode(
            render(f, host=host, username=username, token=token, account=account).encode()
        ).decode("ascii")
        for f in formats
    })


def render_keys(formats: list[OutputFormat], *, host: str, username: str, token: SecretStr,
                account: str | None = None) -> dict[str, str]:
    """Base64 ``data`` entries for every requested format; none for an unsafe token.

    Kept for callers that cannot delete keys; :func:`render_all` also says which
    keys to remove and why.
    """
    rendering = render_all(formats, host=host, username=username, token=token, account=account)
    return {key: value for key, value in rendering.keys.items() if value is not None}
