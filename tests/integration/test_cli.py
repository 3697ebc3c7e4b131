"""The ``externalauth`` console script, run as a user would: a subprocess against the real
control plane, the HTTPS provider simulator and (where needed) the running operator.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.world import World, b64, unb64

EXE = Path(sys.executable).parent / "externalauth"
CODE = re.compile(r"code: ([A-Z0-9]{4}-[A-Z0-9]{4})")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout)


class Login:
    """``externalauth login`` running in the background; its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(EXE), "login", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def user_code(self, timeout: float = 30) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no user code printed; stdout so far: {self.stdout}") from None
            match = CODE.search(line)
            if match:
                return match.group(1)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return rc, "".join(self.stdout), self.proc.stderr.read()


def sign_in(world: World, kubeconfig: Path, *args: str, login: str = "alice") -> tuple[int, str, str]:
    run = Login(world.provider, "-n", world.ns, "--kubeconfig", str(kubeconfig), *args)
    world.sim.approve_device(run.user_code(), login=login)
    return run.finish()


def validated_login(world: World, access_token: str) -> str | None:
    import requests

    r = requests.get(f"{world.sim.url}/user", headers={"Authorization": f"Bearer {access_token}"},
                     verify=world.sim.ca_file, timeout=10)
    return r.json().get("login") if r.status_code == 200 else None


def assert_one_line_error(stderr: str) -> str:
    """The last stderr line is the only ``externalauth: error:`` line; no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("externalauth: error:")]
    assert [lines[-1]] == errors, stderr
    return errors[0]


# --- login ---------------------------------------------------------------------------


def test_login_runs_the_device_flow_and_writes_the_secret_and_the_link(world: World, kubeconfig: Path) -> None:
    """Approve the printed code: a labelled token Secret with a live token, and a link to it."""
    world.make_provider()
    rc, out, err = sign_in(world, kubeconfig, "--link", "gh", login="bob")
    assert (0, ["Waiting for approval: the code expires in 1:00"]) == (rc, err.splitlines()), err
    assert world.sim.url + "/login/device" in out
    secret = world.secret("gh-token")
    data = unb64(secret.data)
    assert ("externalauth.io/oauth2-token", world.provider) == (
        secret.type, secret.metadata.labels["externalauth.io/provider"])
    assert {"access_token", "refresh_token", "token_type", "expiry"} <= set(data)
    assert "bob" == validated_login(world, data["access_token"])
    assert {"providerName": world.provider, "secretName": "gh-token"} == {
        k: world.link("gh")["spec"][k] for k in ("providerName", "secretName")}
    assert data["access_token"] not in out + err


def test_login_again_reauthenticates_and_keeps_the_secrets_other_keys_and_labels(
        world: World, kubeconfig: Path) -> None:
    """A second login replaces the tokens of the same link; a user's own key and label stay."""
    world.make_provider()
    assert 0 == sign_in(world, kubeconfig, "--link", "gh", "--secret", "mine", login="alice")[0]
    first = world.secret_data("mine")
    world.core.patch_namespaced_secret("mine", world.ns, {
        "metadata": {"labels": {"team": "a"}}, "data": {"note": b64("keep me")}})
    rc, _, err = sign_in(world, kubeconfig, "--link", "gh", "--secret", "mine", login="carol")
    assert 0 == rc, err
    secret = world.secret("mine")
    data = unb64(secret.data)
    assert first["access_token"] != data["access_token"]
    assert first["refresh_token"] != data["refresh_token"]
    assert ("carol", "keep me", "a") == (validated_login(world, data["access_token"]), data["note"],
                                         secret.metadata.labels["team"])
    assert "mine" == world.link("gh")["spec"]["secretName"]


def test_login_refuses_to_overwrite_a_secret_that_is_not_a_token_secret(
        world: World, kubeconfig: Path) -> None:
    """Without --force: exit 1, one line naming --force, the Secret untouched, no code asked for."""
    world.make_provider()
    world.core.create_namespaced_secret(world.ns, {"metadata": {"name": "db"},
                                                   "stringData": {"password": "hunter2"}})
    r = cli("login", world.provider, "-n", world.ns, "--link", "gh", "--secret", "db",
            "--kubeconfig", str(kubeconfig))
    error = assert_one_line_error(r.stderr)
    assert (1, True, True) == (r.returncode, "not a token Secret" in error, "--force" in error)
    assert {"password": "hunter2"} == world.secret_data("db")
    assert 0 == world.sim.stats.device_calls


def test_login_with_force_writes_into_a_non_token_secret_keeping_its_keys(
        world: World, kubeconfig: Path) -> None:
    world.make_provider()
    world.core.create_namespaced_secret(world.ns, {"metadata": {"name": "db"},
                                                   "stringData": {"password": "hunter2"}})
    rc, _, err = sign_in(world, kubeconfig, "--link", "gh", "--secret", "db", "--force")
    assert 0 == rc, err
    data = world.secret_data("db")
    assert ("hunter2", "alice") == (data["password"], validated_login(world, data["access_token"]))


def test_a_denied_login_exits_non_zero_and_writes_nothing(world: World, kubeconfig: Path) -> None:
    world.make_provider()
    run = Login(world.provider, "-n", world.ns, "--link", "gh", "--kubeconfig", str(kubeconfig))
    world.sim.deny_device(run.user_code())
    rc, _, err = run.finish()
    error = assert_one_line_error(err)
    assert (1, True) == (rc, "denied" in error)
    assert [] == world.core.list_namespaced_secret(world.ns, field_selector="metadata.name=gh-token").items


# --- refresh and status against the running operator ------------------------------------


def test_refresh_wait_returns_zero_once_the_new_token_is_persisted(
        world: World, operator: Any, kubeconfig: Path) -> None:
    world.make_provider()
    old = world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Ready", "True")
    r = cli("refresh", "gh", "-n", world.ns, "--wait", "--timeout", "30s", "--kubeconfig", str(kubeconfig))
    assert 0 == r.returncode, r.stderr
    new = world.secret_data("gh-token")
    assert (True, True) == (old["access_token"] != new["access_token"],
                            old["refresh_token"] != new["refresh_token"])
    assert "Traceback" not in r.stderr


def test_status_shows_the_link_ready_with_its_account(world: World, operator: Any, kubeconfig: Path) -> None:
    """After validation, the table has the link, READY True and the GitHub login."""
    world.make_provider()
    world.make_token_secret("gh-token", login="dora", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Validated", "True")
    r = cli("status", "-n", world.ns, "--kubeconfig", str(kubeconfig))
    assert 0 == r.returncode, r.stderr
    header, *rows = r.stdout.splitlines()
    assert ["LINK", "PROVIDER", "READY", "ACCOUNT"] == header.split()[:4]
    assert [["gh", world.provider, "True", "dora"]] == [row.split()[:4] for row in rows]
    assert "\x1b[" not in r.stdout  # not a TTY: no colour


def test_status_all_namespaces_as_json_and_yaml(world: World, operator: Any, kubeconfig: Path) -> None:
    """-o json/yaml: the ExternalAuthLink objects as kubectl prints them (a v1 List)."""
    world.make_provider()
    world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Ready", "True")
    as_json = json.loads(cli("status", "-A", "-o", "json", "--kubeconfig", str(kubeconfig)).stdout)
    as_yaml = yaml.safe_load(cli("status", "-A", "-o", "yaml", "--kubeconfig", str(kubeconfig)).stdout)
    mine = [i for i in as_json["items"] if i["metadata"]["namespace"] == world.ns]
    assert (("v1", "List"), [("ExternalAuthLink", "gh", world.provider)]) == (
        (as_json["apiVersion"], as_json["kind"]),
        [(i["kind"], i["metadata"]["name"], i["spec"]["providerName"]) for i in mine])
    assert world.link("gh")["metadata"]["uid"] == mine[0]["metadata"]["uid"]
    assert "managedFields" not in mine[0]["metadata"]
    assert [i["metadata"]["uid"] for i in as_json["items"]] == [i["metadata"]["uid"] for i in as_yaml["items"]]
    table = cli("status", "-A", "--kubeconfig", str(kubeconfig)).stdout
    assert "NAMESPACE" == table.split()[0]
    assert any(line.split()[:2] == [world.ns, "gh"] for line in table.splitlines())


def test_status_output_name_jsonpath_wide_and_no_headers(world: World, kubeconfig: Path) -> None:
    """The kubectl habits: -o name, -o jsonpath=..., -o wide, --no-headers, and -o json of one LINK."""
    world.make_provider()
    for name in ("a", "b"):
        world.make_token_secret(f"{name}-token", expires_in=3600)
        world.make_link(name, secret=f"{name}-token")
    kc = ("--kubeconfig", str(kubeconfig))
    names = cli("status", "-n", world.ns, "-o", "name", *kc)
    path = cli("-n", world.ns, "status", "-o", "jsonpath={.items[*].metadata.name}", *kc)
    ranged = cli("status", "-n", world.ns, *kc, "-o",
                 'jsonpath={range .items[*]}{.metadata.name}={.spec.secretName}{"\n"}{end}')
    wide = cli("status", "-n", world.ns, "-o", "wide", *kc)
    bare = cli("status", "-n", world.ns, "--no-headers", *kc)
    one = json.loads(cli("status", "b", "-n", world.ns, "-o", "json", *kc).stdout)
    assert (["externalauthlink.externalauth.io/a", "externalauthlink.externalauth.io/b"], "a b",
            ["a=a-token", "b=b-token"]) == (names.stdout.splitlines(), path.stdout, ranged.stdout.splitlines())
    assert (["SECRET", "NEXT", "REFRESH", "MESSAGE"], ["a", "b"], ("ExternalAuthLink", "b")) == (
        wide.stdout.splitlines()[0].split()[-4:], [line.split()[0] for line in bare.stdout.splitlines()],
        (one["kind"], one["metadata"]["name"]))


# --- bad input ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ctx:
    kubeconfig: str
    ns: str
    closed: str  # a kubeconfig whose server is a closed port
    world: World
    request: pytest.FixtureRequest


def _link_without_secret(c: Ctx) -> None:
    c.request.getfixturevalue("operator")
    c.world.make_provider()
    c.world.make_link("orphan", secret="missing-token")
    c.world.wait_condition("orphan", "Ready", "False", "SecretNotFound")


def _plain_link(c: Ctx) -> None:
    c.world.make_provider()
    c.world.make_token_secret("idle-token", expires_in=3600)
    c.world.make_link("idle", secret="idle-token")


Args = Callable[[Ctx], list[str]]
CASES: list[Any] = [
    pytest.param(lambda c: ["frobnicate"], None, 2, "invalid choice", id="an unknown subcommand"),
    pytest.param(lambda c: ["login", "--kubeconfig", c.kubeconfig], None, 2,
                 "the following arguments are required: PROVIDER", id="login without a provider"),
    pytest.param(lambda c: ["login", "gh", "--flow", "browser", "--kubeconfig", c.kubeconfig], None, 2,
                 "invalid choice: 'browser'", id="login with an unknown flow"),
    pytest.param(lambda c: ["login", "gh", "--output-format", "ini", "--kubeconfig", c.kubeconfig], None, 2,
                 "invalid choice: 'ini'", id="login with an unknown output format"),
    pytest.param(lambda c: ["status", "x", "-A", "--kubeconfig", c.kubeconfig], None, 2,
                 "give its namespace with -n, not -A", id="status of one link in every namespace"),
    pytest.param(lambda c: ["refresh", "x", "-n", c.ns, "--timeout", "soon"], None, 2,
                 "not a duration", id="refresh with a --timeout that is not a duration"),
    pytest.param(lambda c: ["refresh", "x", "-n", c.ns, "--timeout", "0s"], None, 2,
                 "longer than 0s", id="refresh with a zero --timeout"),
    pytest.param(lambda c: ["status", "-n", c.ns, "-o", "xml", "--kubeconfig", c.kubeconfig], None, 2,
                 "invalid choice: 'xml'", id="status with -o xml"),
    pytest.param(lambda c: ["status", "-n", c.ns, "-A", "--kubeconfig", c.kubeconfig], None, 2,
                 "not allowed with", id="status with both -n and -A"),
    pytest.param(lambda c: ["login", "gh", "-n", c.ns, "--link", "My_Link", "--kubeconfig", c.kubeconfig],
                 None, 2, "link name 'My_Link' is invalid", id="login with an invalid --link name"),
    pytest.param(lambda c: ["status", "-n", "Not A Namespace", "--kubeconfig", c.kubeconfig], None, 2,
                 "namespace 'Not A Namespace' is invalid", id="status with an invalid namespace"),
    pytest.param(lambda c: ["status", "-n", c.ns, "--kubeconfig", c.closed], None, 1,
                 "cannot reach the Kubernetes API server", id="an unreachable cluster"),
    pytest.param(lambda c: ["refresh", "x", "-n", c.ns, "--kubeconfig", c.kubeconfig + ".nope"], None, 1,
                 "does not exist", id="a kubeconfig file that does not exist"),
    pytest.param(lambda c: ["status", "-n", c.ns, "--kubeconfig", c.kubeconfig, "--context", "nope"],
                 None, 1, "context '?nope'?", id="a kubeconfig context that does not exist"),
    pytest.param(lambda c: ["refresh", "nosuch", "-n", c.ns, "--kubeconfig", c.kubeconfig], None, 1,
                 "ExternalAuthLink {ns}/nosuch not found", id="refresh of a missing link"),
    pytest.param(lambda c: ["login", "nosuch", "-n", c.ns, "--link", "x", "--kubeconfig", c.kubeconfig],
                 None, 1, "ExternalAuthProvider nosuch not found", id="login at a missing provider"),
    pytest.param(lambda c: ["refresh", "orphan", "-n", c.ns, "--wait", "--timeout", "30s",
                            "--kubeconfig", c.kubeconfig], _link_without_secret, 4,
                 "failed: Ready=False SecretNotFound.*externalauth login", id="refresh --wait on a link whose Secret "
                 "is missing: 4, sign in again"),
    pytest.param(lambda c: ["refresh", "idle", "-n", c.ns, "--wait", "--timeout", "2s",
                            "--kubeconfig", c.kubeconfig], _plain_link, 5,
                 "timed out after 2s", id="refresh --wait with no operator serving the namespace: 5, timed out"),
    pytest.param(lambda c: ["login", c.world.make_provider(type="generic", tokenURL=c.world.sim.token_url),
                            "-n", c.ns, "--flow", "device", "--kubeconfig", c.kubeconfig], None, 1,
                 "no device authorization endpoint.*--flow pkce",
                 id="login --flow device at a provider without a device endpoint"),
]


@pytest.mark.parametrize(("args", "setup", "code", "message"), CASES)
def test_bad_input_is_one_line_and_a_non_zero_exit(
        request: pytest.FixtureRequest, world: World, kubeconfig: Path, tmp_path: Path,
        args: Args, setup: Callable[[Ctx], None] | None, code: int, message: str) -> None:
    """Each mistake a user can make ends in one ``externalauth: error:`` line, never a traceback."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{_free_port()}"
    closed = tmp_path / "closed.kubeconfig"
    closed.write_text(yaml.safe_dump(config))
    ctx = Ctx(kubeconfig=str(kubeconfig), ns=world.ns, closed=str(closed), world=world, request=request)
    if setup is not None:
        setup(ctx)
    r = cli(*args(ctx))
    error = assert_one_line_error(r.stderr)
    assert (code, True) == (r.returncode, bool(re.search(message.format(ns=world.ns), error))), error
