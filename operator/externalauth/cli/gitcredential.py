"""``externalauth git-credential get|store|erase``: a git credential helper that answers from the
mounted token Secret's files. No network, no Kubernetes credentials. ``git config
credential.helper externalauth`` runs ``scripts/git-credential-externalauth`` (installed beside
the command), a POSIX sh fast path that starts no program for the common answer and hands
everything else to this module, the reference (the unit tables run against both).

At each call it reads ``--secret-dir`` (default ``$EXTERNALAUTH_SECRET_DIR``): ``access_token``
(the password), ``expiry`` (RFC 3339: ``password_expiry_utc``, so that git 2.41 and later,
and ``credential-cache`` in front of this helper, drop the token when it expires) and the
format keys that name the provider's host and git user name (``git-credentials``, else
``netrc``, else ``gh-hosts.yml``), or ``--host``/``--username``. Reading the files at each call
picks up the kubelet's rewrite of the mounted Secret after a refresh.

It answers only a request for ``https`` and the provider's host (anything else: nothing
printed, exit 0, so that git asks its next helper); ``store`` and ``erase`` do nothing (the
operator owns the token). A missing file or an unusable token is one line on stderr and
exit 1 (git then goes on without it).

Start-up matters (git runs a helper for every fetch): this module imports nothing but
``os`` and ``sys`` (``datetime`` only when there is an expiry), and ``externalauth
git-credential`` enters here before the command line parser is built.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

PROG = "externalauth git-credential"
ENV_DIR = "EXTERNALAUTH_SECRET_DIR"
ACCESS_TOKEN = "access_token"
EXPIRY = "expiry"
#: The format keys that name the provider's host (and git's user name), in the order read.
FORMAT_FILES = ("git-credentials", "netrc", "gh-hosts.yml")
DEFAULT_USERNAME = "oauth2"
USAGE = f"usage: {PROG} [--secret-dir DIR] [--host HOST] [--username USER] get|store|erase"
HELP = f"""{USAGE}

A git credential helper for workspaces: answers git's request (on stdin) for the
provider's host from the mounted token Secret's files, read at each call:
access_token (the password), expiry (password_expiry_utc) and the format keys
git-credentials / netrc / gh-hosts.yml (the host and git user name).

  git config --global credential.helper externalauth
  (or: git config --global credential.helper '!externalauth git-credential')

options:
  --secret-dir DIR  the mounted Secret (default: ${ENV_DIR})
  --host HOST       answer for this host (default: from the format keys)
  --username USER   git's user name (default: from the format keys, else {DEFAULT_USERNAME})

exit codes: 0 answered or nothing to answer; 1 the files cannot be used; 2 usage."""


class HelperError(Exception):
    """One line for stderr; exit 1."""


# --- pure -----------------------------------------------------------------------------------
def read_request(lines: Sequence[str]) -> dict[str, str]:
    """git's request: ``key=value`` lines up to a blank line (the last value of a key wins)."""
    request: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if sep:
            request[key] = value
    return request


def _unquote(text: str) -> str:
    """Percent-decoding (what the git-credentials file's user and host are encoded with)."""
    if "%" not in text:
        return text
    out, i = bytearray(), 0
    raw = text.encode()
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _netrc_word(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return word[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return word


def hosts_from(name: str, content: str) -> list[tuple[str, str | None]]:
    """(host, user name) pairs a format key names (contract §3's formats; the user name is
    None where the format has none)."""
    found: list[tuple[str, str | None]] = []
    for raw in content.splitlines():
        line = raw.strip()
        if name == "git-credentials" and line.startswith("https://"):
            userinfo, at, host = line[len("https://"):].rstrip("/").rpartition("@")
            if at:
                found.append((_unquote(host).split("/")[0], _unquote(userinfo.partition(":")[0])))
        elif name == "netrc" and line.startswith("machine "):
            words = line.split()
            user = words[words.index("login") + 1] if "login" in words[:-1] else None
            found.append((_netrc_word(words[1]), _netrc_word(user) if user else None))
        elif name == "gh-hosts.yml" and raw[:1] == '"' and line.endswith('":'):
            found.append((line[1:-2], None))  # the first line, "host": (the user is GitHub's account)
    return found


def same_host(asked: str, ours: str) -> bool:
    """Host names compare without case; a port must match (``host:8443``), and 443 is https's own."""
    def norm(host: str) -> str:
        host = host.strip().lower()
        return host[:-4] if host.endswith(":443") else host
    return bool(asked) and norm(asked) == norm(ours)


def _visible_ascii(text: str) -> bool:
    return bool(text) and all("\x21" <= c <= "\x7e" for c in text)


def expiry_seconds(text: str) -> int:
    """Unix seconds of an RFC 3339 time (``2026-12-05T20:00:00Z``, fractions and offsets too)."""
    import datetime as dt

    value = text.strip()
    if len(value) < 20 or value[4] != "-" or value[10] not in "Tt ":
        raise ValueError(value)
    moment = dt.datetime.fromisoformat(value[:10] + "T" + value[11:].replace("z", "Z").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(value)
    return int(moment.timestamp())


def wanted(request: Mapping[str, str]) -> bool:
    """Only https requests that name a host are answered (the token never goes over plain http)."""
    return request.get("protocol", "") == "https" and bool(request.get("host"))


def answer(request: Mapping[str, str], files: Mapping[str, str], *, host: str | None = None,
           username: str | None = None) -> str:
    """What ``get`` prints for ``request``, given the Secret's ``files`` (name → content; a
    missing file is not in it). Empty when the request is not for the provider's host.
    :class:`HelperError` when the files cannot be used."""
    if not wanted(request):
        return ""
    known: list[tuple[str, str | None]] = []
    if host:
        known.append((host, username))
    else:
        for name in FORMAT_FILES:
            if name in files:
                known += hosts_from(name, files[name])
        if not known:
            raise HelperError("no git-credentials, netrc or gh-hosts.yml in the Secret directory to name the "
                              "provider's host; mount one (outputFormats) or pass --host")
    asked = request.get("host", "")
    match = next(((h, u) for h, u in known if same_host(asked, h)), None)
    if match is None:
        return ""
    user = username or match[1] or DEFAULT_USERNAME
    if request.get("username") and request["username"] != user:
        return ""  # git asks for another account on this host: not ours to answer
    if ACCESS_TOKEN not in files:
        raise HelperError(f"no {ACCESS_TOKEN} file in the Secret directory (is the Secret's {ACCESS_TOKEN} key "
                          "mounted?)")
    token = files[ACCESS_TOKEN].strip()
    if not _visible_ascii(token):
        raise HelperError(f"{ACCESS_TOKEN} is empty or holds characters other than visible ASCII; not answered")
    if not _visible_ascii(user):
        raise HelperError("the git user name holds whitespace or control characters; not answered")
    lines = [f"username={user}", f"password={token}"]
    raw_expiry = files.get(EXPIRY, "").strip()
    if raw_expiry:
        try:
            lines.append(f"password_expiry_utc={expiry_seconds(raw_expiry)}")
        except ValueError:
            raise HelperError(f"{EXPIRY} is not an RFC 3339 time; not answered") from None
    return "\n".join(lines) + "\n"


# --- I/O ------------------------------------------------------------------------------------------
def read_files(directory: str) -> dict[str, str]:
    """The Secret's files this helper reads (those that exist), read now."""
    if not os.path.isdir(directory):
        raise HelperError(f"the Secret directory {directory} does not exist (set --secret-dir or ${ENV_DIR} "
                          "to where the token Secret is mounted)")
    files: dict[str, str] = {}
    for name in (ACCESS_TOKEN, EXPIRY, *FORMAT_FILES):
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                files[name] = f.read(1 << 20)
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as e:
            raise HelperError(f"cannot read {name} in {directory}: {type(e).__name__}") from None
    return files


def _parse_args(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """(action, options); a usage mistake is a :class:`ValueError` with the message."""
    action: str | None = None
    options: dict[str, str] = {}
    args = list(argv)
    while args:
        word = args.pop(0)
        name, eq, value = word.partition("=")
        if name in ("--secret-dir", "--host", "--username"):
            if not eq:
                if not args:
                    raise ValueError(f"{name} needs a value")
                value = args.pop(0)
            options[name[2:]] = value
        elif word in ("-h", "--help"):
            return "help", options
        elif word.startswith("-") or action is not None:
            raise ValueError(f"unexpected argument {word[:60]!r}")
        else:
            action = word
    return action, options


def run(argv: Sequence[str], *, stdin: TextIO, stdout: TextIO, stderr: TextIO,
        environ: Mapping[str, str], read: Callable[[str], dict[str, str]] = read_files) -> int:
    try:
        action, options = _parse_args(argv)
    except ValueError as e:
        print(f"{USAGE}\n{PROG}: error: {e}", file=stderr)
        return 2
    if action == "help":
        print(HELP, file=stdout)
        return 0
    if action is None:
        print(f"{USAGE}\n{PROG}: error: give the action: get, store or erase", file=stderr)
        return 2
    request = read_request(stdin.readlines())  # read whole, so that git never writes into a closed pipe
    if action != "get" or not wanted(request):
        return 0  # store, erase: the operator owns the token; any other action is ignored, as git asks
    directory = options.get("secret-dir") or environ.get(ENV_DIR, "")
    try:
        if not directory:
            raise HelperError(f"no Secret directory: pass --secret-dir or set ${ENV_DIR}")
        text = answer(request, read(directory), host=options.get("host"), username=options.get("username"))
    except HelperError as e:
        print(f"{PROG}: error: {e}", file=stderr)
        return 1
    stdout.write(text)
    stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``externalauth git-credential ACTION...`` (``argv``: what follows ``git-credential``)."""
    return run(sys.argv[1:] if argv is None else argv, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr,
               environ=os.environ)


def command(args: object) -> int:
    """The parsed form (``externalauth git-credential --help`` goes through the parser;
    every other call is routed to :func:`main` before the parser is built)."""
    return main([getattr(args, "action", "")] + [f"--{k.replace('_', '-')}={v}" for k in ("secret_dir", "host",
                                                                                        "username")
                                                  if (v := getattr(args, k, None))])
