"""Sign-in as a user meets it: ``externalauth login`` with a browser (authorization code + PKCE
on a loopback redirect) where the test plays the browser against the simulator's authorize
endpoint; the defaults (namespace, link); exit codes; ``status LINK``/``-w``; ``refresh
--wait`` on a watch; and ``kubectl externalauth`` through the real kubectl.

The browser sign-ins run the command as the base install has it (no ``operator`` extra:
:mod:`tests.harness.slim`), so they also prove that a workspace image needs nothing more.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import yaml

from tests.harness import slim
from tests.harness.waiting import wait_for
from tests.harness.world import World
from tests.integration.test_cli import EXE, Login, assert_one_line_error, cli, validated_login

BIN = Path(sys.executable).parent
URL = re.compile(r"^\s+(https://\S+)$")
CALLBACK = re.compile(r"^http://127\.0\.0\.1:(\d+)/callback$")


class Run:
    """A command running in the background, its stdout and stderr read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        # The default SIGINT disposition, as a terminal gives it: a test run started in the
        # background by a non-interactive shell (CI) inherits SIGINT *ignored*, and Python
        # keeps an ignored SIGINT ignored, so Ctrl-C (the SIGINT the tests send) did nothing.
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})},
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, True), daemon=True),
                      threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, False), daemon=True)]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream: Any, into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line)
            if announce:
                self.lines.put(line)

    def line(self, pattern: re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line like {pattern.pattern}; stdout {self.out}, stderr {self.err}") from None
            match = pattern.search(line)
            if match:
                return match

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        for pump in self.pumps:
            pump.join(timeout=10)  # the pipes are at their end once the process is gone
        return rc, "".join(self.out), "".join(self.err)


def browser_login(world: World, kubeconfig: Path, *args: str) -> Run:
    return Run(slim.command("login", world.provider, "-n", world.ns, "--kubeconfig", str(kubeconfig), *args))


def play_browser(world: World, url: str, **form: str) -> tuple[requests.Response, requests.Response | None]:
    """What a browser does: open the authorize page (the test user signs in and consents
    with ``login=``), follow the provider's redirect to the loopback address."""
    page = requests.get(url, params={"login": "bob", **form}, verify=world.sim.ca_file, allow_redirects=False,
                        timeout=10)
    if page.status_code != 302:
        return page, None
    return page, requests.get(page.headers["location"], allow_redirects=False, timeout=10)


def closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def token_secrets(world: World) -> list[str]:
    """Names of the Secrets opted in to a provider (login writes one; the client Secret is not)."""
    items = world.core.list_namespaced_secret(world.ns, label_selector="externalauth.io/provider").items
    return [s.metadata.name for s in items]


def generic_provider(world: World) -> str:
    """A provider with no device endpoint: login takes the browser by itself."""
    return world.make_provider(type="generic", tokenURL=world.sim.token_url,
                               authorizationURL=world.sim.authorize_url)


# --- the browser flow ----------------------------------------------------------------------


def test_a_browser_sign_in_writes_the_secret_the_link_and_the_format_keys(world: World, kubeconfig: Path) -> None:
    """No device endpoint: PKCE on a loopback redirect. The link defaults to the provider's
    name, the Secret holds bob's live token and the git-credentials key at once (before any
    operator ran), no client secret was sent, the listener is closed afterwards."""
    generic_provider(world)
    run = browser_login(world, kubeconfig, "--output-format", "git-credentials")
    url = run.line(URL).group(1)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    port = int(CALLBACK.match(query["redirect_uri"]).group(1))  # type: ignore[union-attr]
    _, back = play_browser(world, url)
    rc, out, err = run.finish()
    assert (0, 200) == (rc, back.status_code if back else None), err
    assert ("S256", "code", True) == (query["code_challenge_method"], query["response_type"], closed(port))
    data = world.secret_data(f"{world.provider}-token")
    assert ("bob", True) == (validated_login(world, data["access_token"]), bool(data.get("refresh_token")))
    assert f"https://oauth2:{data['access_token']}@127.0.0.1:{world.sim.port}\n" == data["git-credentials"]
    link = world.link(world.provider)["spec"]
    assert (world.provider, f"{world.provider}-token", ["git-credentials"]) == (
        link["providerName"], link["secretName"], link["outputFormats"])
    stats = world.sim.authorizer.stats
    assert (1, 0) == (stats.codes_redeemed, stats.exchanges_with_client_secret)
    assert "Waiting for the browser: the sign-in expires in 5:00" in err
    assert data["access_token"] not in out + err and data["refresh_token"] not in out + err


def test_with_a_display_the_browser_is_opened_and_plays_the_sign_in(world: World, kubeconfig: Path,
                                                                   tmp_path: Path) -> None:
    """DISPLAY set: login opens $BROWSER with the URL (here a script that signs in as carol)."""
    generic_provider(world)
    browser = tmp_path / "browser"
    browser.write_text(f"""#!{sys.executable}
import sys, requests
page = requests.get(sys.argv[1], params={{"login": "carol"}}, verify={world.sim.ca_file!r}, allow_redirects=False)
requests.get(page.headers["location"], timeout=10)
""")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    run = Run(slim.command("login", world.provider, "-n", world.ns, "--kubeconfig", str(kubeconfig)),
              env={"DISPLAY": ":99", "BROWSER": str(browser)})
    rc, out, err = run.finish()
    assert (0, "Opening a browser") == (rc, out.splitlines()[0][:17]), err
    assert "carol" == validated_login(world, world.secret_data(f"{world.provider}-token")["access_token"])


def test_flow_pkce_signs_in_with_the_browser_where_a_device_endpoint_exists(world: World, kubeconfig: Path) -> None:
    """A github provider has a device endpoint; --flow pkce takes the browser anyway, at the
    authorize endpoint beside its token endpoint."""
    world.make_provider()
    run = browser_login(world, kubeconfig, "--flow", "pkce", "--link", "gh")
    url = run.line(URL).group(1)
    play_browser(world, url)
    rc, out, err = run.finish()
    assert (0, world.sim.authorize_url, 0) == (rc, url.split("?")[0], world.sim.stats.device_calls), err
    assert "bob" == validated_login(world, world.secret_data("gh-token")["access_token"])
    # login names the account before it writes (security review finding 9)
    shown, written = out.find("Signed in as bob at "), out.find("Secret ")
    assert 0 <= shown < written, out


def test_a_sign_in_denied_in_the_browser_exits_1_and_writes_nothing(world: World, kubeconfig: Path) -> None:
    generic_provider(world)
    run = browser_login(world, kubeconfig)
    play_browser(world, run.line(URL).group(1), deny="1")
    rc, _, err = run.finish()
    error = assert_one_line_error(err)
    assert (1, True) == (rc, "denied in the browser" in error)
    assert [] == token_secrets(world)


def test_a_forged_callback_is_ignored_no_code_is_exchanged_and_login_keeps_waiting(world: World,
                                                                                kubeconfig: Path) -> None:
    """A request to the loopback address with another state (a local process trying its own
    code) is answered 400 and ignored: login keeps waiting, and the user's own sign-in then
    completes it (security review finding 9: the forged request used to end login)."""
    generic_provider(world)
    run = browser_login(world, kubeconfig)
    url = run.line(URL).group(1)
    query = parse_qs(urlsplit(url).query)
    forged = requests.get(query["redirect_uri"][0], params={"code": "attacker", "state": "guess"}, timeout=10)
    assert (400, None, 0) == (forged.status_code, run.proc.poll(), world.sim.stats.token_calls)
    _, back = play_browser(world, url)
    rc, _, err = run.finish()
    assert (0, 200, 1) == (rc, back.status_code if back else None, world.sim.stats.token_calls), err


def test_a_token_endpoint_that_redirects_the_code_exchange_is_not_followed(
        world: World, kubeconfig: Path, make_simulator: Any) -> None:
    """The code and the verifier go to the token endpoint only: a 307 elsewhere is refused,
    and nothing reaches the place it points at."""
    generic_provider(world)
    elsewhere = make_simulator()
    world.sim.add_fault("token", "redirect", value=307, headers={"location": elsewhere.token_url})
    run = browser_login(world, kubeconfig)
    play_browser(world, run.line(URL).group(1))
    rc, _, err = run.finish()
    assert (1, True, 0) == (rc, "a redirect, which is never followed" in assert_one_line_error(err),
                            elsewhere.stats.requests_received)
    assert [] == token_secrets(world)


def test_a_browser_that_never_comes_back_times_out_with_exit_5(world: World, kubeconfig: Path) -> None:
    generic_provider(world)
    run = browser_login(world, kubeconfig, "--timeout", "2s")
    redirect = parse_qs(urlsplit(run.line(URL).group(1)).query)["redirect_uri"][0]
    port = int(CALLBACK.match(redirect).group(1))  # type: ignore[union-attr]
    rc, _, err = run.finish()
    assert (5, True, True) == (rc, "no sign-in came back from the browser within 2s" in assert_one_line_error(err),
                               closed(port))
    assert [] == token_secrets(world)


def test_a_device_code_that_expires_unapproved_exits_5(world: World, kubeconfig: Path) -> None:
    world.make_provider()
    rc, _, err = Login(world.provider, "-n", world.ns, "--timeout", "2s", "--kubeconfig", str(kubeconfig)).finish()
    assert (5, True) == (rc, "expired" in assert_one_line_error(err))


# --- defaults ----------------------------------------------------------------------------------


def test_login_defaults_to_the_contexts_namespace_and_the_providers_name(world: World, kubeconfig: Path,
                                                                      tmp_path: Path) -> None:
    """No -n, no --link: the kubeconfig context's namespace and a link named after the provider."""
    world.make_provider()
    config = yaml.safe_load(kubeconfig.read_text())
    for ctx in config["contexts"]:
        ctx["context"]["namespace"] = world.ns
    mine = tmp_path / "ns.kubeconfig"
    mine.write_text(yaml.safe_dump(config))
    run = Login(world.provider, "--kubeconfig", str(mine))
    world.sim.approve_device(run.user_code(), login="dora")
    rc, out, err = run.finish()
    assert (0, f"Secret {world.ns}/{world.provider}-token created; ExternalAuthLink {world.ns}/{world.provider} "
               "created.") == (rc, out.splitlines()[-1]), err
    assert "dora" == validated_login(world, world.secret_data(f"{world.provider}-token")["access_token"])
    assert "Waiting for approval: the code expires in 1:00" in err


# --- status LINK, status -w, refresh --wait ------------------------------------------------------


def test_status_of_one_link_shows_its_conditions_and_events_and_exits_0(
        world: World, operator: Any, kubeconfig: Path) -> None:
    world.make_provider()
    world.make_token_secret("gh-token", login="erin", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Validated", "True")
    world.request_refresh("gh")
    wait_for(lambda: "Refreshed" in world.event_reasons("gh"), timeout=30, message="a Refreshed event")
    r = cli("status", "gh", "-n", world.ns, "--kubeconfig", str(kubeconfig))
    lines = r.stdout.splitlines()
    assert (0, f"Link:                  {world.ns}/gh", "Account:               erin") == (
        r.returncode, lines[0], lines[3]), r.stderr
    table = lines[lines.index("Conditions:") + 1:lines.index("Events (last 5):")]
    assert ["TYPE", "Ready", "Refreshable", "Validated"] == [row.split()[0] for row in table]
    events = lines[lines.index("Events (last 5):") + 2:]
    assert any(row.split()[3] == "Refreshed" for row in events), r.stdout  # AGE is two words ("1s ago")


def test_status_of_a_link_that_needs_a_sign_in_exits_4(world: World, operator: Any, kubeconfig: Path) -> None:
    """A Secret that is not opted in: only `login` fixes it."""
    world.make_provider()
    world.make_token_secret("gh-token", labels={})
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Ready", "False", "SecretNotOptedIn")
    r = cli("status", "gh", "-n", world.ns, "-o", "json", "--kubeconfig", str(kubeconfig))
    conditions = yaml.safe_load(r.stdout)["status"]["conditions"]
    assert (4, ["SecretNotOptedIn"]) == (r.returncode, [c["reason"] for c in conditions if c["type"] == "Ready"])


def test_status_watch_prints_again_on_a_change_and_ctrl_c_exits_130(world: World, kubeconfig: Path) -> None:
    world.make_provider()
    world.make_link("gh", secret="gh-token")
    run = Run([str(EXE), "status", "gh", "-n", world.ns, "-w", "--kubeconfig", str(kubeconfig)])
    run.line(re.compile(r"^Output formats: +-$"))
    world.co.patch_namespaced_custom_object("externalauth.io", "v1alpha1", world.ns, "externalauthlinks", "gh",
                                            {"spec": {"outputFormats": ["netrc"]}})
    run.line(re.compile(r"^Output formats: +netrc$"))
    run.proc.send_signal(signal.SIGINT)
    rc, _, err = run.finish()
    assert (130, "externalauth: interrupted") == (rc, err.strip().splitlines()[-1])


def watch_only_user(world: World, control_plane: Any) -> Path:
    """A user who may patch and watch links in the namespace, but neither get nor list them."""
    name = f"watcher-{world.ns}"
    rbac = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": world.ns},
         "rules": [{"apiGroups": ["externalauth.io"], "resources": ["externalauthlinks"],
                    "verbs": ["patch", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": world.ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]},
    ]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    path: Path = control_plane.mint_user(name)
    return path


def test_refresh_wait_waits_on_a_watch_not_by_polling(world: World, operator: Any, control_plane: Any,
                                                      kubeconfig: Path) -> None:
    """A user who may not GET the link (patch and watch only) still gets the verdict: the
    command reads it from a watch that starts at its own annotation write."""
    world.make_provider()
    old = world.make_token_secret("gh-token", expires_in=3600)
    world.make_link("gh", secret="gh-token")
    world.wait_condition("gh", "Ready", "True")
    user = watch_only_user(world, control_plane)
    denied = cli("status", "gh", "-n", world.ns, "--kubeconfig", str(user))
    r = cli("refresh", "gh", "-n", world.ns, "--wait", "--timeout", "30s", "--kubeconfig", str(user))
    assert (1, True) == (denied.returncode, "forbidden" in denied.stderr)  # the user really cannot read it
    assert (0, f"ExternalAuthLink {world.ns}/gh refreshed (Refreshable: Refreshed).") == (
        r.returncode, r.stdout.strip()), r.stderr
    assert old["refresh_token"] != world.secret_data("gh-token")["refresh_token"]


# --- kubectl externalauth ------------------------------------------------------------------------


def kubectl_env(kubeconfig: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KUBECONFIG": str(kubeconfig)}


def test_kubectl_externalauth_status_through_the_real_kubectl(world: World, control_plane: Any,
                                                              kubeconfig: Path) -> None:
    """kubectl finds the kubectl-externalauth plugin on PATH and hands it the arguments."""
    world.make_provider()
    world.make_link("gh", secret="gh-token")
    r = subprocess.run([str(control_plane.binaries.kubectl), "externalauth", "status", "-n", world.ns],
                       capture_output=True, text=True, env=kubectl_env(kubeconfig), timeout=60)
    assert (0, ["LINK", "PROVIDER", "READY"], ["gh", world.provider, "Unknown"]) == (
        r.returncode, r.stdout.splitlines()[0].split()[:3], r.stdout.splitlines()[1].split()[:3]), r.stderr


def test_kubectl_completes_the_plugins_commands_and_links(world: World, control_plane: Any,
                                                         kubeconfig: Path) -> None:
    """`kubectl externalauth <TAB>`: kubectl runs kubectl_complete-externalauth and relays it."""
    world.make_provider()
    world.make_link("github-work", secret="x")
    env = kubectl_env(kubeconfig)
    kubectl = str(control_plane.binaries.kubectl)
    command = subprocess.run([kubectl, "__complete", "externalauth", "st"], capture_output=True, text=True,
                             env=env, timeout=60)
    link = subprocess.run([kubectl, "__complete", "externalauth", "refresh", "-n", world.ns, "git"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "status" in [line.split("\t")[0] for line in command.stdout.splitlines()], command.stderr
    assert "github-work" in link.stdout.splitlines(), link.stderr
