"""The Kubernetes flags: given before or after the command, read as kubectl reads them. Pure tables."""

from __future__ import annotations

import pytest

from externalauth.cli import kubeflags
from externalauth.cli.kubeflags import KubeFlags
from externalauth.cli.main import build_parser
from externalauth.errors import InvalidInputError


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param(["-n", "alice", "status"], KubeFlags(namespace="alice"), id="-n before the command"),
    pytest.param(["status", "-n", "alice"], KubeFlags(namespace="alice"), id="-n after the command"),
    pytest.param(["-n", "bob", "status", "-n", "alice"], KubeFlags(namespace="alice"),
                 id="given twice, the one after the command wins"),
    pytest.param(["--kubeconfig", "/k", "--context", "c", "refresh", "gh"], KubeFlags(kubeconfig="/k", context="c"),
                 id="--kubeconfig and --context before the command"),
    pytest.param(["login", "gh", "--kubeconfig=/k", "--context=c"], KubeFlags(kubeconfig="/k", context="c"),
                 id="--kubeconfig and --context after the command"),
    pytest.param(["--request-timeout", "1m", "status"], KubeFlags(request_timeout=60.0),
                 id="--request-timeout before the command"),
    pytest.param(["status", "--request-timeout", "0"], KubeFlags(request_timeout=0.0),
                 id="--request-timeout 0 after the command"),
    pytest.param(["--as", "bob", "--as-group", "a", "status", "--as-group", "b"],
                 KubeFlags(as_user="bob", as_groups=("a", "b")), id="--as-group collects from both places"),
    pytest.param(["status"], KubeFlags(), id="nothing given"),
])
def test_the_flags_parsed(argv: list[str], expected: KubeFlags) -> None:
    assert expected == kubeflags.from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("30", 30.0, id="a whole number is seconds"),
    pytest.param("0", 0.0, id="0 is no timeout"),
    pytest.param("30s", 30.0, id="seconds with a unit"),
    pytest.param("1m", 60.0, id="minutes"),
    pytest.param("1h30m", 5400.0, id="a compound duration"),
    pytest.param("500ms", 0.5, id="milliseconds"),
])
def test_request_timeout_reads_kubectls_syntax(text: str, seconds: float) -> None:
    assert seconds == kubeflags.parse_request_timeout(text)


@pytest.mark.parametrize("text", [
    pytest.param("-1", id="a negative number"),
    pytest.param("1x", id="an unknown unit"),
    pytest.param("", id="nothing"),
    pytest.param("1.5", id="a fraction without a unit"),
])
def test_a_bad_request_timeout_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid --request-timeout"):
        kubeflags.parse_request_timeout(text)


@pytest.mark.parametrize(("flags", "expected"), [
    pytest.param(KubeFlags(), 15.0, id="not given: the default"),
    pytest.param(KubeFlags(request_timeout=0.0), None, id="0: no limit"),
    pytest.param(KubeFlags(request_timeout=2.5), 2.5, id="given: as given"),
])
def test_the_timeout_a_request_gets(flags: KubeFlags, expected: float | None) -> None:
    assert expected == flags.timeout()
