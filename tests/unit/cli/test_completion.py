"""Shell completion: what one TAB offers (a table over the real parser), the answer's format,
and the generated scripts run by the real shells."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from externalauth.cli import completing
from externalauth.cli.completing import Need
from externalauth.cli.main import build_parser

TREE = completing.tree(build_parser())
BIN = str(Path(sys.executable).parent)


@pytest.mark.parametrize(("words", "current", "values", "need"), [
    pytest.param([], "", ["login", "refresh", "status", "token", "logout", "git-credential", "completion", "run"],
                 Need.NONE,
                 id="the commands first"),
    pytest.param([], "st", ["status"], Need.NONE, id="a command by its start"),
    pytest.param([], "--v", ["--version"], Need.NONE, id="a top-level flag"),
    pytest.param(["login"], "", [], Need.PROVIDER, id="login asks the cluster for providers"),
    pytest.param(["refresh"], "gi", [], Need.LINK, id="refresh asks the cluster for links"),
    pytest.param(["status"], "", [], Need.LINK, id="status asks the cluster for a link"),
    pytest.param(["status", "-n"], "", [], Need.NAMESPACE, id="-n asks the cluster for namespaces"),
    pytest.param(["status", "--kubeconfig"], "", [], Need.FILE, id="--kubeconfig is a file"),
    pytest.param(["-n"], "", [], Need.NAMESPACE, id="-n before the command asks for namespaces"),
    pytest.param(["-n", "alice"], "st", ["status"], Need.NONE, id="the command after a global flag and its value"),
    pytest.param(["--kubeconfig", "k", "refresh"], "", [], Need.LINK, id="a link after global flags"),
    pytest.param(["status"], "--req", ["--request-timeout"], Need.NONE, id="a global flag after the command"),
    pytest.param(["login", "gh", "--output-format"], "n", ["netrc"], Need.NONE, id="an output format"),
    pytest.param(["login", "gh", "--flow"], "", ["auto", "device", "pkce"], Need.NONE, id="a flow"),
    pytest.param(["completion"], "", ["bash", "zsh", "fish"], Need.NONE, id="a shell"),
    pytest.param(["status"], "--w", ["--watch"], Need.NONE, id="a flag of the command"),
    pytest.param(["status"], "--v", [], Need.NONE, id="a top-level flag is not taken after the command"),
    pytest.param(["login", "gh", "--link", "x"], "--li", [], Need.NONE, id="a flag given once is not offered again"),
    pytest.param(["login", "gh", "--output-format", "netrc"], "--output", ["--output-format"], Need.NONE,
                 id="a repeatable flag is offered again"),
    pytest.param(["login", "--flow=pkce"], "", [], Need.PROVIDER, id="a flag with its value after ="),
    pytest.param(["login", "gh"], "", [], Need.NONE, id="nothing after the last positional"),
    pytest.param(["frobnicate"], "", [], Need.NONE, id="nothing after an unknown command"),
])
def test_one_tab(words: list[str], current: str, values: list[str], need: Need) -> None:
    answer = completing.complete(TREE, words, current)
    assert (values, need) == ([v for v, _ in answer.candidates], answer.need)


def test_the_answer_is_in_cobras_format_so_kubectl_can_relay_it() -> None:
    """value<TAB>help lines, names found in the cluster filtered by the word, then :directive."""
    with_help = completing.complete(TREE, [], "ref")
    names = completing.complete(TREE, ["refresh"], "gi")
    files = completing.complete(TREE, ["status", "--kubeconfig"], "")
    assert ("refresh\task the operator to refresh a link's token now\n:4\n", "github\ngitlab\n:4\n", ":0\n") == (
        completing.render(with_help), completing.render(names, ["github", "gitlab", "other"]),
        completing.render(files))


def shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}


def script(shell: str) -> str:
    return subprocess.run([f"{BIN}/externalauth", "completion", shell], capture_output=True, text=True,
                          check=True).stdout


def test_bash_completes_through_the_script() -> None:
    """The bash script, sourced in a real bash, fills COMPREPLY from `externalauth __complete`."""
    program = script("bash") + """
COMP_WORDS=(externalauth status --o); COMP_CWORD=2; _externalauth_complete; echo "${COMPREPLY[*]}"
COMP_WORDS=(externalauth login gh --flow ""); COMP_CWORD=4; _externalauth_complete; echo "${COMPREPLY[*]}"
"""
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=shell_env(), timeout=30)
    assert ["--output", "auto device pkce"] == out.stdout.splitlines(), out.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (apt-get install fish)")
def test_fish_completes_through_the_script() -> None:
    program = "externalauth completion fish | source; complete -C'externalauth status --w'"
    out = subprocess.run(["fish", "--no-config", "-c", program], capture_output=True, text=True, env=shell_env(),
                         timeout=30)
    assert ["--watch\tafter the first answer, print again on every change"] == out.stdout.splitlines(), out.stderr


def _read_until(fd: int, wanted: str, *, timeout: float) -> str:
    """What the terminal shows, read until ``wanted`` appears or ``timeout`` passes."""
    seen = ""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:
                break
    return seen


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_completes_through_the_script(tmp_path: Path) -> None:
    """An interactive zsh (on a pseudo-terminal, with compinit) completes `--wa` to `--watch`."""
    (tmp_path / ".zshrc").write_text("autoload -U compinit; compinit -u\n"
                                     "source <(externalauth completion zsh)\nPS1='ready> '\n")
    env = {**shell_env(), "ZDOTDIR": str(tmp_path), "HOME": str(tmp_path), "TERM": "dumb"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell
        os.execvpe("zsh", ["zsh", "-i"], env)
    try:
        _read_until(fd, "ready> ", timeout=20)
        os.write(fd, b"externalauth status --wa\t")
        shown = _read_until(fd, "--watch", timeout=20)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    assert "externalauth status --watch" in shown
