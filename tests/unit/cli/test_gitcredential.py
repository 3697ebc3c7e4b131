"""``externalauth git-credential``: what git is told for which request and which files. Pure
tables over :func:`gitcredential.run` with the files handed in, plus the import rule that
keeps it fast."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from externalauth.cli import gitcredential

TOKEN = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
GIT_CREDENTIALS = {"git-credentials": "https://x-access-token:gho_old@github.com\n"}
EXPIRY = {"expiry": "2026-12-05T21:00:00Z"}  # 1796504400
REQUEST = "protocol=https\nhost=github.com\n\n"


def run(request: str, files: dict[str, str] | None, *args: str, env: dict[str, str] | None = None,
        action: str = "get") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def read(directory: str) -> dict[str, str]:
        if files is None:
            raise gitcredential.HelperError(f"the Secret directory {directory} does not exist")
        return files

    code = gitcredential.run([*args, action], stdin=io.StringIO(request), stdout=out, stderr=err,
                             environ={"EXTERNALAUTH_SECRET_DIR": "/var/run/token"} if env is None else env, read=read)
    return code, out.getvalue(), err.getvalue()


GET_CASES = [
    pytest.param(REQUEST, {"access_token": TOKEN + "\n", **GIT_CREDENTIALS, **EXPIRY}, (),
                 f"username=x-access-token\npassword={TOKEN}\npassword_expiry_utc=1796504400\n",
                 id="the provider's host: user from git-credentials, password from access_token, expiry"),
    pytest.param(REQUEST, {"access_token": TOKEN, **GIT_CREDENTIALS}, (),
                 f"username=x-access-token\npassword={TOKEN}\n", id="no expiry file: no password_expiry_utc"),
    pytest.param("protocol=https\nhost=gitlab.com\n\n", {"access_token": TOKEN, **GIT_CREDENTIALS}, (), "",
                 id="another host: nothing, so that git asks its next helper"),
    pytest.param("protocol=http\nhost=github.com\n\n", {"access_token": TOKEN, **GIT_CREDENTIALS}, (), "",
                 id="plain http: the token is never sent in the clear"),
    pytest.param("protocol=https\nhost=github.com\nusername=someone\n\n", {"access_token": TOKEN, **GIT_CREDENTIALS},
                 (), "", id="git asks for another account on the host: not ours"),
    pytest.param("protocol=https\nhost=GitHub.com:443\npath=org/repo.git\n\n",
                 {"access_token": TOKEN, **GIT_CREDENTIALS}, (), f"username=x-access-token\npassword={TOKEN}\n",
                 id="host names compare without case, and 443 is https's own port"),
    pytest.param("protocol=https\nhost=git.example:8443\n\n",
                 {"access_token": TOKEN, "git-credentials": "https://oauth2:t@git.example:8443\n"}, (),
                 f"username=oauth2\npassword={TOKEN}\n", id="a provider on another port"),
    pytest.param("protocol=https\nhost=git.example\n\n",
                 {"access_token": TOKEN, "git-credentials": "https://oauth2:t@git.example:8443\n"}, (), "",
                 id="the same host on another port is not the provider"),
    pytest.param("protocol=https\nhost=gitlab.com\n\n",
                 {"access_token": TOKEN, "netrc": "machine gitlab.com login oauth2 password t\n"}, (),
                 f"username=oauth2\npassword={TOKEN}\n", id="the host and user from netrc"),
    pytest.param(REQUEST, {"access_token": TOKEN, "gh-hosts.yml": '"github.com":\n    user: "octo"\n'}, (),
                 f"username=oauth2\npassword={TOKEN}\n", id="the host from gh-hosts.yml, the default user"),
    pytest.param("protocol=https\nhost=git.corp\n\n", {"access_token": TOKEN}, ("--host", "git.corp"),
                 f"username=oauth2\npassword={TOKEN}\n", id="--host without any format file"),
    pytest.param("protocol=https\nhost=git.corp\n\n", {"access_token": TOKEN, **GIT_CREDENTIALS},
                 ("--host=git.corp", "--username", "me"), f"username=me\npassword={TOKEN}\n",
                 id="--host and --username win over the format keys"),
    pytest.param(REQUEST, {"access_token": TOKEN, "git-credentials": "https://x%2Dtoken:t@github.com\n"}, (),
                 f"username=x-token\npassword={TOKEN}\n", id="a percent-encoded user name is decoded"),
    pytest.param(REQUEST, {"access_token": TOKEN, **GIT_CREDENTIALS, "expiry": "2026-12-05T22:00:00.5+01:00\n"}, (),
                 f"username=x-access-token\npassword={TOKEN}\npassword_expiry_utc=1796504400\n",
                 id="an expiry with a fraction and an offset"),
    pytest.param(REQUEST, {"access_token": "  " + TOKEN + "  \n", **GIT_CREDENTIALS, "expiry": "2024-02-29T00:00:00Z"},
                 (), f"username=x-access-token\npassword={TOKEN}\npassword_expiry_utc=1709164800\n",
                 id="surrounding blanks are not part of the token; a leap day"),
    pytest.param("protocol=https\n\n", {"access_token": TOKEN, **GIT_CREDENTIALS}, (), "",
                 id="a request without a host gets nothing"),
    pytest.param(REQUEST, {"access_token": TOKEN, "git-credentials": "https://oauth2:t@gitlab.com\n",
                           "netrc": "machine github.com login x-access-token password t\n"}, (),
                 f"username=x-access-token\npassword={TOKEN}\n", id="netrc names the host git-credentials does not"),
]
ERROR_CASES = [
    pytest.param({**GIT_CREDENTIALS}, None, "no access_token file", id="the access_token file is missing"),
    pytest.param({"access_token": TOKEN}, None, "no git-credentials, netrc or gh-hosts.yml",
                 id="no format file and no --host: the host is unknown"),
    pytest.param(None, None, "does not exist", id="the Secret directory is missing"),
    pytest.param({"access_token": TOKEN, **GIT_CREDENTIALS}, {}, "pass --secret-dir or set $EXTERNALAUTH_SECRET_DIR",
                 id="neither --secret-dir nor the variable"),
    pytest.param({"access_token": "abc\nusername=evil", **GIT_CREDENTIALS}, None, "other than visible ASCII",
                 id="a token that would add a line to git's answer is refused"),
    pytest.param({"access_token": "", **GIT_CREDENTIALS}, None, "empty", id="an empty token"),
    pytest.param({"access_token": TOKEN, **GIT_CREDENTIALS, "expiry": "tomorrow"}, None, "not an RFC 3339 time",
                 id="an expiry that is not a time"),
    pytest.param({"access_token": TOKEN, **GIT_CREDENTIALS, "expiry": "2026-02-30T00:00:00Z"}, None,
                 "not an RFC 3339 time", id="an expiry on a day that does not exist"),
    pytest.param({"access_token": TOKEN, "git-credentials": "https://x\x01y:t@github.com\n"}, None,
                 "user name holds whitespace or control characters", id="a user name with a control character"),
]


@pytest.mark.parametrize(("request_text", "files", "args", "expected"), GET_CASES)
def test_get(request_text: str, files: dict[str, str], args: tuple[str, ...], expected: str) -> None:
    assert (0, expected, "") == run(request_text, files, *args)


@pytest.mark.parametrize(("files", "env", "message"), ERROR_CASES)
def test_get_with_files_it_cannot_use_is_one_line_and_exit_1(
        files: dict[str, str] | None, env: dict[str, str] | None, message: str) -> None:
    code, out, err = run(REQUEST, files, env=env)
    assert (1, "", True, 1) == (code, out, message in err, len(err.splitlines())), err
    assert TOKEN not in err


# --- the sh fast path (git-credential-externalauth) gives the same answers ----------------------
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "git-credential-externalauth"


def run_script(tmp_path: Path, request: str, files: dict[str, str] | None, *args: str,
               env: dict[str, str] | None = None, action: str = "get") -> tuple[int, str, str]:
    secret = tmp_path / "token"
    if files is not None:
        secret.mkdir()
        for name, content in files.items():
            (secret / name).write_text(content)
    environ = {"PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    environ |= {"EXTERNALAUTH_SECRET_DIR": str(secret)} if env is None else env
    r = subprocess.run(["sh", str(SCRIPT), *args, *([action] if action else [])], input=request,
                       capture_output=True, text=True, env=environ, timeout=30, check=False)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize(("request_text", "files", "args", "expected"), GET_CASES)
def test_the_script_answers_get_as_the_command_does(tmp_path: Path, request_text: str, files: dict[str, str],
                                                    args: tuple[str, ...], expected: str) -> None:
    assert (0, expected, "") == run_script(tmp_path, request_text, files, *args)


@pytest.mark.parametrize(("files", "env", "message"), ERROR_CASES)
def test_the_script_refuses_what_the_command_refuses(tmp_path: Path, files: dict[str, str] | None,
                                                     env: dict[str, str] | None, message: str) -> None:
    code, out, err = run_script(tmp_path, REQUEST, files, env=env)
    assert (1, "", True, 1) == (code, out, message in err, len(err.splitlines())), err


@pytest.mark.parametrize(("args", "code"), [
    pytest.param(["store"], 0, id="store does nothing"),
    pytest.param(["erase"], 0, id="erase does nothing"),
    pytest.param(["--help"], 0, id="--help is the command's"),
    pytest.param([], 2, id="no action is a usage mistake"),
])
def test_the_script_other_actions(tmp_path: Path, args: list[str], code: int) -> None:
    got, out, _ = run_script(tmp_path, REQUEST, {"access_token": TOKEN, **GIT_CREDENTIALS}, *args[:-1],
                             action=args[-1] if args else "")
    assert (code, TOKEN in out) == (got, False)


def test_the_script_starts_no_program_on_the_common_path(tmp_path: Path) -> None:
    """With PATH empty but sh itself, the common answer still comes: no cat, tr, date or python."""
    secret = tmp_path / "token"
    secret.mkdir()
    for name, content in {"access_token": TOKEN, **GIT_CREDENTIALS, **EXPIRY}.items():
        (secret / name).write_text(content)
    r = subprocess.run(["/bin/sh", str(SCRIPT), "get"], input=REQUEST, capture_output=True, text=True, timeout=30,
                       env={"PATH": "/nonexistent", "EXTERNALAUTH_SECRET_DIR": str(secret)}, check=False)
    assert (0, f"username=x-access-token\npassword={TOKEN}\npassword_expiry_utc=1796504400\n") == (
        r.returncode, r.stdout), r.stderr


@pytest.mark.parametrize("action", ["store", "erase", "capability"])
def test_other_actions_do_nothing(action: str) -> None:
    """store/erase: the operator owns the token; an action git may add later is ignored, as git asks."""
    assert (0, "", "") == run(REQUEST + f"username=x\npassword={TOKEN}\n", None, action=action)


@pytest.mark.parametrize(("args", "message"), [
    pytest.param([], "give the action", id="no action"),
    pytest.param(["get", "extra"], "unexpected argument", id="two actions"),
    pytest.param(["--secret-dir"], "needs a value", id="a flag without its value"),
    pytest.param(["--frob", "get"], "unexpected argument", id="an unknown flag"),
])
def test_usage_mistakes_exit_2(args: list[str], message: str) -> None:
    err = io.StringIO()
    code = gitcredential.run(args, stdin=io.StringIO(""), stdout=io.StringIO(), stderr=err, environ={})
    assert (2, True) == (code, message in err.getvalue())


def test_the_helper_imports_neither_the_kube_client_nor_yaml() -> None:
    """Start-up: git runs the helper per fetch; it loads no parser, no kube client, no yaml."""
    probe = ("import sys; import externalauth.cli.gitcredential as g; "
             "g.run(['get'], stdin=__import__('io').StringIO(''), stdout=sys.stdout, stderr=sys.stderr, "
             "environ={}); print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('yaml', 'urllib3', 'argparse', 'json', 'requests') or m.startswith('externalauth.kube')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False).stdout
    assert "[]" == out.strip().splitlines()[-1]
