"""A git smart-HTTP endpoint behind the provider's tokens (I/O: files, ``git`` subprocesses).

The simulator serves bare repositories under ``/git/<name>.git`` so that a real
``git clone``/``git fetch`` proves what a workspace needs: the token the operator
wrote is one the provider honours *now*. Only fetching is served:

- ``GET  /git/<name>.git/info/refs?service=git-upload-pack``
- ``POST /git/<name>.git/git-upload-pack``

Every request needs HTTP Basic credentials: user ``x-access-token`` (what GitHub
and the operator's ``git-credentials`` file use) and, as password, an access
token of this provider that is neither expired nor revoked (a refresh revokes the
previous one). Anything else is 401 with a Basic challenge, so git asks its
credential helper, exactly as against GitHub. Pushing, the dumb protocol and
other paths are 403/404.

The protocol itself is ``git http-backend`` run as a CGI program per request
(``GIT_PROJECT_ROOT`` = the repositories' folder); this module only authenticates,
maps the request to CGI variables and parses the CGI answer. ``GitRepos`` makes the
repositories with ordinary git commands in a scratch clone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from providersim.provider import _basic

PREFIX = "/git/"
GIT_USER = "x-access-token"
UPLOAD_PACK = "git-upload-pack"
REALM = 'Basic realm="providersim git", charset="UTF-8"'
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: Seconds one ``git http-backend`` run may take (a small repository needs well under one).
BACKEND_TIMEOUT = 60.0


class GitError(RuntimeError):
    """A repository could not be created or changed (the message has git's stderr)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """What to send back: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True)
class GitRequest:
    """The parts of an HTTP request the endpoint looks at (header names lower-case)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


def _git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run git hermetically (no system or user configuration); return its stdout."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    res = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=BACKEND_TIMEOUT,
        env={**base, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
             "HOME": os.devnull, **(env or {})},
    )
    if res.returncode != 0:
        raise GitError(f"git {args[0]} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip()


class GitRepos:
    """Bare repositories under ``root``, created and advanced by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        if not _REPO_NAME.match(name) or name.endswith(".git"):
            raise ValueError(f"invalid repository name {name!r} (letters, digits, . _ -; no .git suffix)")
        return self.root / f"{name}.git"

    def create(self, name: str, files: Mapping[str, str], *, message: str = "initial commit") -> str:
        """A new bare repository ``<name>.git`` whose branch ``main`` has one commit of
        ``files`` (path -> text); returns the commit's id."""
        bare = self.path(name)
        if bare.exists():
            raise ValueError(f"repository {name!r} exists")
        _git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        return self.commit(name, files, message=message)

    def commit(self, name: str, files: Mapping[str, str], *, message: str) -> str:
        """Add a commit to ``main`` that writes ``files``; returns its id."""
        bare = self.path(name)
        if not bare.is_dir():
            raise KeyError(f"no repository {name!r}")
        author = {"GIT_AUTHOR_NAME": "providersim", "GIT_AUTHOR_EMAIL": "sim@providersim.invalid",
                  "GIT_COMMITTER_NAME": "providersim", "GIT_COMMITTER_EMAIL": "sim@providersim.invalid"}
        with tempfile.TemporaryDirectory(prefix="providersim-git-") as scratch:
            work = Path(scratch) / "work"
            _git("clone", "--quiet", str(bare), str(work))
            _git("checkout", "--quiet", "-B", "main", cwd=work)
            for rel, text in files.items():
                target = work / rel
                if work.resolve() not in target.resolve().parents:
                    raise ValueError(f"file {rel!r} is outside the repository")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            _git("add", "--all", cwd=work)
            _git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work, env=author)
            _git("push", "--quiet", "origin", "main", cwd=work)
        return self.head(name)

    def head(self, name: str) -> str:
        """The commit id of ``main``."""
        return _git("rev-parse", "refs/heads/main", cwd=self.path(name))

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def authorized(authorization: str, *, token_is_live: Callable[[str], bool]) -> bool:
    """Whether an ``Authorization`` header carries Basic ``x-access-token:<live token>``."""
    creds = _basic(authorization)
    if creds is None:
        return False
    user, password = creds
    return user == GIT_USER and bool(password) and token_is_live(password)


def route(path: str, query: str) -> tuple[str, str] | None:
    """``(repository name, PATH_INFO)`` of a fetch request, or None for anything else."""
    if not path.startswith(PREFIX):
        return None
    repo, sep, rest = path[len(PREFIX):].partition("/")
    name = repo.removesuffix(".git")
    if not sep or not repo.endswith(".git") or not _REPO_NAME.match(name):
        return None
    if rest == "info/refs" and f"service={UPLOAD_PACK}" in query.split("&"):
        return name, f"/{repo}/info/refs"
    if rest == UPLOAD_PACK:
        return name, f"/{repo}/{UPLOAD_PACK}"
    return None


def serve(request: GitRequest, *, repos: GitRepos, token_is_live: Callable[[str], bool]) -> Answer:
    """Answer one request on ``/git/...``."""
    text = {"content-type": "text/plain; charset=utf-8"}
    if not authorized(request.headers.get("authorization", ""), token_is_live=token_is_live):
        return Answer(401, {**text, "www-authenticate": REALM}, b"Authentication failed\n")
    if "receive-pack" in request.path or "receive-pack" in request.query:
        return Answer(403, text, b"This simulator does not accept pushes\n")
    routed = route(request.path, request.query)
    expected_method = "POST" if request.path.endswith(UPLOAD_PACK) else "GET"
    if routed is None or request.method != expected_method:
        return Answer(404, text, b"Not Found\n")
    name, path_info = routed
    if not repos.path(name).is_dir():
        return Answer(404, text, b"Repository not found\n")
    return _backend(request, repos=repos, path_info=path_info)


def _backend(request: GitRequest, *, repos: GitRepos, path_info: str) -> Answer:
    """Run ``git http-backend`` as a CGI program for one request."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        # Belt and braces: route() already refuses receive-pack.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "false",
        "GIT_PROJECT_ROOT": str(repos.root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query,
        "REMOTE_USER": GIT_USER,
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(request.body)),
    }
    for header, variable in (("content-type", "CONTENT_TYPE"),
                             ("content-encoding", "HTTP_CONTENT_ENCODING"),
                             ("git-protocol", "HTTP_GIT_PROTOCOL")):
        if header in request.headers:
            env[variable] = request.headers[header]
    try:
        res = subprocess.run(["git", "http-backend"], input=request.body, capture_output=True,
                             env=env, timeout=BACKEND_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Answer(504, {"content-type": "text/plain; charset=utf-8"}, b"git http-backend timed out\n")
    return parse_cgi(res.stdout)


def control(repos: GitRepos, method: str, path: str, data: Mapping[str, object]) -> tuple[int, object]:
    """``/_sim/git/...`` for a simulator in its own process: ``POST /_sim/git/repos``
    ``{"name", "files"}`` creates a repository, ``POST /_sim/git/commits``
    ``{"name", "files", "message"}`` adds a commit; both answer ``{"commit": <id>}``."""
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError("files must be an object of path -> text")
    files = {str(k): str(v) for k, v in files.items()}
    if (method, path) == ("POST", "/_sim/git/repos"):
        return 201, {"commit": repos.create(str(data["name"]), files)}
    if (method, path) == ("POST", "/_sim/git/commits"):
        message = str(data.get("message") or "a commit")
        return 201, {"commit": repos.commit(str(data["name"]), files, message=message)}
    return 404, {"error": f"no control endpoint {method} {path}"}


def parse_cgi(output: bytes) -> Answer:
    """A CGI program's output (headers, a blank line, the body) as an answer."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return Answer(502, {"content-type": "text/plain; charset=utf-8"}, b"bad CGI answer\n")
    status = 200
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "status":
            status = int(value.split()[0])
        elif key:
            headers[key] = value
    return Answer(status, headers, body)
