"""Ready-to-mount credential files (contract §3, ``outputFormats``). Pure."""

from __future__ import annotations

import base64
import enum
import json
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


def render(fmt: OutputFormat, *, host: str, username: str, token: SecretStr,
           account: str | None = None) -> str:
    """The file content for one format. ``host`` may carry a port (``git.example:8443``)."""
    secret = token.reveal()
    if fmt is OutputFormat.GIT_CREDENTIALS:
        user = urllib.parse.quote(username, safe="")
        password = urllib.parse.quote(secret, safe="")
        return f"https://{user}:{password}@{host}\n"
    if fmt is OutputFormat.NETRC:
        machine = host.split(":", 1)[0]
        return f"machine {machine} login {username} password {secret}\n"
    # gh-hosts: GitHub CLI hosts.yml; JSON strings are valid YAML scalars.
    lines = [
        f"{json.dumps(host)}:",
        f"    user: {json.dumps(account or username)}",
        f"    oauth_token: {json.dumps(secret)}",
        "    git_protocol: https",
    ]
    return "\n".join(lines) + "\n"


def render_keys(formats: list[OutputFormat], *, host: str, username: str, token: SecretStr,
                account: str | None = None) -> dict[str, str]:
    """Base64 ``data`` entries for every requested format."""
    return {
        KEYS[f]: base64.b64encode(
            render(f, host=host, username=username, token=token, account=account).encode()
        ).decode("ascii")
        for f in formats
    }
