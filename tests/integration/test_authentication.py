"""Real authentication, as users have it: a pod's ServiceAccount token that rotates under the
operator, kubeconfigs whose user is an exec credential plugin (as EKS, GKE and AKS write
them, or Teleport's ``tsh`` with a client certificate), merged from a multi-path
``KUBECONFIG``, found before the pod's ServiceAccount as kubectl finds them, and
impersonation judged by RBAC.

Tokens are real TokenRequest tokens of ServiceAccounts bound to Secrets: deleting the Secret
revokes the token, as deleting a pod revokes its projected token.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness.operator_fixtures import (
    least_privileged_kubeconfig,
    least_privileged_service_account,
    service_account_token,
)
from tests.harness.proxy import ConnectProxy
from tests.harness.waiting import wait_for
from tests.harness.world import World
from tests.integration.test_cli import Login

EXE = Path(sys.executable).parent / "externalauth"
NOT_DUE = 3600
V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def answer_to(control_plane: Any, token: str) -> int:
    """The status code the API server gives ``token`` for discovery, which every authenticated
    user may read (200: accepted, 401: refused)."""
    r = requests.get(f"{control_plane.server}/api",
                     headers={"Authorization": f"Bearer {token}"},
                     verify=str(control_plane.dir / "pki" / "serving-ca.crt"), timeout=10)
    return r.status_code


def revoke(control_plane: Any, *, namespace: str, bound_secret: str, token: str) -> None:
    """Delete the token's bound Secret and wait until the API server refuses the token."""
    assert 200 == answer_to(control_plane, token)
    control_plane.kubectl("delete", "secret", bound_secret, "-n", namespace)
    wait_for(lambda: answer_to(control_plane, token) == 401, timeout=30, message="the old token to be refused")


def project(directory: Path, files: dict[str, str]) -> None:
    """Write ``files`` into ``directory`` as the kubelet updates a projected volume: a new
    timestamped folder, then one atomic swap of the ``..data`` symlink the files point through."""
    directory.mkdir(exist_ok=True)
    stamp = directory / f"..{uuid.uuid4().hex[:8]}"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, directory / "..data")


def ready_link(world: World, name: str) -> dict[str, str]:
    data = world.make_token_secret(f"{name}-token", expires_in=NOT_DUE)
    world.make_link(name, secret=f"{name}-token")
    world.wait_condition(name, "Ready", "True")
    return data


def refresh_persists(world: World, name: str) -> None:
    """A forced refresh of ``name`` lands in its Secret (the operator's own writes)."""
    before = world.secret_data(f"{name}-token")["refresh_token"]
    world.wait_refreshed(name, world.request_refresh(name), timeout=60)
    assert before != world.secret_data(f"{name}-token")["refresh_token"]


# --- a pod's ServiceAccount token, rotated and revoked under the operator --------------------


def test_the_operator_follows_its_service_account_token_as_it_rotates(
        world: World, control_plane: Any, make_operator: Any, tmp_path: Path) -> None:
    """In a pod (emulated: KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount volume), the
    kubelet swaps the token file and the old token is revoked. A forced refresh still persists
    (our own writes); after every connection has dropped (an API server restart), a new link is
    still noticed (kopf's watch logs in again) and refreshed."""
    ns = world.ns
    least_privileged_service_account(control_plane, namespace=ns, name="externalauth-operator")
    first = service_account_token(control_plane, namespace=ns, name="externalauth-operator", bound_secret="pod-1")
    volume = tmp_path / "serviceaccount"
    ca = (control_plane.dir / "pki" / "serving-ca.crt").read_text()
    project(volume, {"token": first, "ca.crt": ca, "namespace": ns})
    operator = make_operator(namespaces=[ns], kubeconfig=None, env={
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(control_plane.secure_port),
        "EXTERNALAUTH_SERVICE_ACCOUNT_DIR": str(volume)})
    world.make_provider()
    ready_link(world, "first")

    second = service_account_token(control_plane, namespace=ns, name="externalauth-operator", bound_secret="pod-2")
    project(volume, {"token": second, "ca.crt": ca, "namespace": ns})
    revoke(control_plane, namespace=ns, bound_secret="pod-1", token=first)
    refresh_persists(world, "first")  # kopf's streams, opened with the old token, are still open

    control_plane.restart_apiserver()  # every stream reconnects: the old token would be refused
    ready_link(world, "second")
    refresh_persists(world, "second")
    assert operator.proc.poll() is None


# --- exec credential plugins ------------------------------------------------------------------


class Plugin:
    """An exec credential plugin: prints an ExecCredential with the token in ``token_file``
    (expiring at ``expires``), and counts its runs. It refuses to answer unless it was given
    the ``KUBERNETES_EXEC_INFO`` of its apiVersion and the env of its kubeconfig entry."""

    def __init__(self, directory: Path, *, api_version: str = V1) -> None:
        self.api_version = api_version
        self.path = directory / "credential-plugin"
        self.token_file = directory / "plugin-token"
        self.runs_file = directory / "plugin-runs"
        self.path.write_text(textwrap.dedent(f"""\
            #!{sys.executable}
            import json, os, sys
            info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
            if info["apiVersion"] != {api_version!r} or os.environ.get("PLUGIN_MARK") != "set-by-kubeconfig":
                sys.exit("plugin: not called as an exec credential plugin")
            with open({str(self.runs_file)!r}, "a") as runs:
                runs.write("run\\n")
            with open({str(self.token_file)!r}) as f:
                token = f.read().strip()
            with open({str(directory / "plugin-expires")!r}) as f:
                expires = f.read().strip()
            print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential",
                              "status": {{"token": token, "expirationTimestamp": expires}}}}))
            """))
        self.path.chmod(0o755)
        self.expire_at(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))

    def expire_at(self, moment: dt.datetime) -> None:
        (self.path.parent / "plugin-expires").write_text(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def hand_out(self, token: str) -> None:
        self.token_file.write_text(token)

    @property
    def runs(self) -> int:
        try:
            return len(self.runs_file.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def user(self) -> dict[str, Any]:
        return {"exec": {"apiVersion": self.api_version, "command": str(self.path), "interactiveMode": "Never",
                         "env": [{"name": "PLUGIN_MARK", "value": "set-by-kubeconfig"}]}}


def cluster_entry(control_plane: Any) -> dict[str, Any]:
    admin = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    return dict(admin["clusters"][0]["cluster"])


def plugin_kubeconfig(control_plane: Any, plugin: Plugin, path: Path, namespace: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster_entry(control_plane)}],
        "users": [{"name": "plugin", "user": plugin.user()}],
        "contexts": [{"name": "plugin", "context": {"cluster": "test", "user": "plugin", "namespace": namespace}}],
        "current-context": "plugin"}))
    return path


def merged_kubeconfig(control_plane: Any, plugin: Plugin, directory: Path, namespace: str) -> str:
    """A ``KUBECONFIG`` of three paths, as a laptop has it: a missing file (skipped), a file
    that sets current-context and defines the context, and a file that defines the cluster and
    the plugin user plus a decoy context of the same name pointing elsewhere (the first wins)."""
    first, second = directory / "config-a", directory / "config-b"
    first.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "work",
        "contexts": [{"name": "work", "context": {"cluster": "test", "user": "plugin", "namespace": namespace}}]}))
    second.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "decoy",
        "clusters": [{"name": "test", "cluster": cluster_entry(control_plane)},
                     {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "plugin", "user": plugin.user()}],
        "contexts": [{"name": "work", "context": {"cluster": "nowhere", "user": "plugin"}},
                     {"name": "decoy", "context": {"cluster": "nowhere", "user": "plugin"}}]}))
    return os.pathsep.join([str(directory / "missing"), str(first), str(second)])


def cli_user(control_plane: Any, namespace: str, name: str) -> str:
    """A ServiceAccount allowed everything (authentication is what is tested here); returns a
    token bound to a Secret."""
    control_plane.kubectl("create", "serviceaccount", name, "-n", namespace)
    control_plane.kubectl("create", "clusterrolebinding", f"{namespace}-{name}", "--clusterrole", "cluster-admin",
                          f"--serviceaccount={namespace}:{name}")
    return service_account_token(control_plane, namespace=namespace, name=name, bound_secret=f"{name}-bound")


def cli(*args: str, kubeconfig_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig_env}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=90, env=env)


@pytest.mark.parametrize("api_version", [V1, V1BETA1], ids=["client.authentication v1", "v1beta1"])
def test_the_cli_authenticates_through_an_exec_plugin_from_a_merged_kubeconfig(
        world: World, operator: Any, control_plane: Any, tmp_path: Path, api_version: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``status``, ``refresh --wait`` and ``login`` work through an exec plugin in a context
    merged from a multi-path KUBECONFIG; each command runs the plugin once although it makes
    several requests (refresh: read, annotate, then poll until persisted; login: provider,
    Secret and link)."""
    world.make_provider()
    ready_link(world, "gh")
    plugin = Plugin(tmp_path, api_version=api_version)
    plugin.hand_out(cli_user(control_plane, world.ns, "developer"))
    kubeconfig_env = merged_kubeconfig(control_plane, plugin, tmp_path, world.ns)

    status = cli("status", kubeconfig_env=kubeconfig_env)
    assert (0, 1) == (status.returncode, plugin.runs), status.stderr
    assert "gh" in status.stdout

    before = world.secret_data("gh-token")["refresh_token"]
    refresh = cli("refresh", "gh", "-n", world.ns, "--wait", "--timeout", "60s", kubeconfig_env=kubeconfig_env)
    assert (0, 2) == (refresh.returncode, plugin.runs), refresh.stderr
    assert before != world.secret_data("gh-token")["refresh_token"]

    monkeypatch.setenv("KUBECONFIG", kubeconfig_env)
    login = Login(world.provider, "-n", world.ns, "--link", "signed-in")
    world.sim.approve_device(login.user_code(), login="bob")
    rc, _, err = login.finish()
    assert (0, 3) == (rc, plugin.runs), err
    assert "signed-in-token" == world.link("signed-in")["spec"]["secretName"]


def test_an_expired_plugin_token_is_not_reused(world: World, operator: Any, control_plane: Any,
                                               tmp_path: Path) -> None:
    """A plugin token past its expirationTimestamp is obtained again before the next request,
    so ``refresh --wait`` (a patch, then a watch) runs an always-expired plugin for each."""
    world.make_provider()
    ready_link(world, "gh")
    plugin = Plugin(tmp_path)
    plugin.hand_out(cli_user(control_plane, world.ns, "developer"))
    plugin.expire_at(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    kubeconfig = plugin_kubeconfig(control_plane, plugin, tmp_path / "kubeconfig", world.ns)
    refresh = cli("refresh", "gh", "-n", world.ns, "--wait", "--timeout", "60s", "--kubeconfig", str(kubeconfig),
                  kubeconfig_env="")
    assert 0 == refresh.returncode, refresh.stderr
    assert plugin.runs >= 2  # a cached token would have been one run


def test_the_operator_runs_through_an_exec_plugin_and_follows_its_new_token(
        world: World, control_plane: Any, make_operator: Any, tmp_path: Path) -> None:
    """``externalauth run`` with an exec-plugin kubeconfig: the preflight, our own client and
    kopf's watches share one plugin run. When the plugin's token is revoked before its expiry,
    a 401 makes the plugin run once more: for our writes (while kopf's streams stay open), and
    for kopf's watches when they reconnect (an API server restart)."""
    ns = world.ns
    least_privileged_service_account(control_plane, namespace=ns, name="externalauth-operator")
    plugin = Plugin(tmp_path)
    tokens = [service_account_token(control_plane, namespace=ns, name="externalauth-operator",
                                    bound_secret=f"grant-{i}") for i in range(3)]
    plugin.hand_out(tokens[0])
    kubeconfig = plugin_kubeconfig(control_plane, plugin, tmp_path / "kubeconfig", ns)
    operator = make_operator(namespaces=[ns], kubeconfig=kubeconfig)
    world.make_provider()
    ready_link(world, "first")
    refresh_persists(world, "first")
    assert 1 == plugin.runs

    plugin.hand_out(tokens[1])
    revoke(control_plane, namespace=ns, bound_secret="grant-0", token=tokens[0])
    refresh_persists(world, "first")
    assert 2 == plugin.runs

    plugin.hand_out(tokens[2])
    revoke(control_plane, namespace=ns, bound_secret="grant-1", token=tokens[1])
    control_plane.restart_apiserver()
    ready_link(world, "second")
    refresh_persists(world, "second")
    assert 3 == plugin.runs
    assert operator.proc.poll() is None


# --- TLS: the kubeconfig's trust, and nothing else ---------------------------------------------


def _with_ca_of_simulator(cluster: dict[str, Any], world: World) -> None:
    cluster["certificate-authority-data"] = base64.b64encode(world.sim.ca_pem.encode()).decode()


def _without_ca(cluster: dict[str, Any], world: World) -> None:
    del cluster["certificate-authority-data"]


def _insecure(cluster: dict[str, Any], world: World) -> None:
    del cluster["certificate-authority-data"]
    cluster["insecure-skip-tls-verify"] = True


def _server_name(name: str) -> Any:
    def change(cluster: dict[str, Any], world: World) -> None:
        cluster["tls-server-name"] = name
    return change


def links_served(world: World) -> bool:
    """Whether links can be listed yet (a control plane just started answers 429 for a moment)."""
    from kubernetes.client import ApiException

    try:
        world.co.list_namespaced_custom_object("externalauth.io", "v1alpha1", world.ns, "externalauthlinks")
    except ApiException as e:
        if e.status == 429:
            return False
        raise
    return True


TRUST = [
    pytest.param(lambda cluster, world: None, True, id="the kubeconfig's CA is trusted"),
    pytest.param(_with_ca_of_simulator, False, id="another CA is not"),
    pytest.param(_without_ca, False,
                 id="without a CA only the system's trust is used, not REQUESTS_CA_BUNDLE or certifi"),
    pytest.param(_insecure, True, id="insecure-skip-tls-verify skips verification"),
    pytest.param(_server_name("kubernetes.default.svc"), True, id="tls-server-name is a name of the certificate"),
    pytest.param(_server_name("elsewhere.example"), False,
                 id="tls-server-name that the certificate does not name is refused"),
]


@pytest.mark.parametrize(("change", "trusted"), TRUST)
def test_the_api_server_is_trusted_as_the_kubeconfig_says(
        world: World, kubeconfig: Path, tmp_path: Path, change: Any, trusted: bool) -> None:
    """The CLI verifies the API server against the kubeconfig's CA and server name only (the
    admin's client certificate, given as data, is loaded from memory)."""
    wait_for(lambda: links_served(world), timeout=30, message="the API server to serve ExternalAuthLinks")
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    change(doc["clusters"][0]["cluster"], world)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(Path(kubeconfig).parent / "pki" / "serving-ca.crt"),
           "SSL_CERT_FILE": ""}
    done = subprocess.run([str(EXE), "status", "-n", world.ns, "--kubeconfig", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)
    if trusted:
        assert 0 == done.returncode, done.stderr
    else:
        assert 1 == done.returncode
        assert "TLS failed" in done.stderr


# --- whose credentials: kubectl's order, impersonation, exec plugins with client certificates ------


def acting_user(client: Any) -> tuple[str, list[str]]:
    """Who the API server takes ``client`` (a :class:`Connection`) for: a SelfSubjectReview,
    which every authenticated user may create."""
    from externalauth.kube import api, translating

    what = "asking the API server who we are"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = api.send(client, "POST", what=what, version="authentication.k8s.io/v1", url="selfsubjectreviews",
                      data=json.dumps(body), headers=api.JSON)
    info = translating.json_object(answer, what=what)["status"]["userInfo"]
    return info["username"], sorted(set(info.get("groups") or []) - {"system:authenticated"})


def connect(**kwargs: Any) -> Any:
    from externalauth.kube import connection

    return connection.connect(pool_size=1, **kwargs)


@pytest.fixture
def in_a_pod(control_plane: Any, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process as in a pod: KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount volume
    of ``workspace`` (its token, the CA, the namespace); a HOME without a kubeconfig and no
    KUBECONFIG. Returns the ServiceAccount's user name."""
    control_plane.kubectl("create", "serviceaccount", "workspace", "-n", namespace)
    token = service_account_token(control_plane, namespace=namespace, name="workspace", bound_secret="workspace-pod")
    volume = tmp_path / "serviceaccount"
    project(volume, {"token": token, "ca.crt": (control_plane.dir / "pki" / "serving-ca.crt").read_text(),
                     "namespace": namespace})
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.secure_port))
    monkeypatch.setenv("EXTERNALAUTH_SERVICE_ACCOUNT_DIR", str(volume))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return f"system:serviceaccount:{namespace}:workspace"


def _home(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "home" / ".kube").mkdir()
    (tmp_path / "home" / ".kube" / "config").write_text(path.read_text())
    return {}


def _env(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(path)]))
    return {}


def _flag(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return {"kubeconfig": str(path)}


def _nowhere(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return {}


WHERE = [
    pytest.param(_home, "alice", id="in a pod, ~/.kube/config wins over the ServiceAccount"),
    pytest.param(_env, "alice", id="in a pod, KUBECONFIG wins over the ServiceAccount"),
    pytest.param(_flag, "alice", id="in a pod, --kubeconfig wins over the ServiceAccount"),
    pytest.param(_nowhere, None, id="in a pod without a kubeconfig: the ServiceAccount"),
]


@pytest.mark.parametrize(("put", "expected"), WHERE)
def test_a_kubeconfig_comes_before_the_pods_service_account(
        control_plane: Any, in_a_pod: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        put: Any, expected: str | None) -> None:
    """Whom the API server takes the client for, with a kubeconfig of user ``alice`` put
    where kubectl looks (kubectl uses the pod's ServiceAccount only without a kubeconfig)."""
    alice = control_plane.mint_user(f"alice-{uuid.uuid4().hex[:6]}")
    name = yaml.safe_load(alice.read_text())["users"][0]["name"]
    client = connect(**put(alice, tmp_path, monkeypatch))
    assert ((expected and name) or in_a_pod) == acting_user(client)[0]


def with_user_fields(path: Path, target: Path, **fields: Any) -> Path:
    """A copy of the kubeconfig at ``path`` whose user has ``fields`` added."""
    doc = yaml.safe_load(path.read_text())
    doc["users"][0]["user"].update(fields)
    target.write_text(yaml.safe_dump(doc))
    return target


def test_a_kubeconfig_user_with_as_acts_as_that_user(control_plane: Any, kubeconfig: Path, tmp_path: Path) -> None:
    """``as`` and ``as-groups`` are sent as impersonation: the API server reviews the
    impersonated user; ``impersonate``/``impersonate_groups`` (``--as``/``--as-group``)
    replace them."""
    path = with_user_fields(kubeconfig, tmp_path / "kubeconfig", **{"as": "jane", "as-groups": ["devs", "ops"]})
    assert ("jane", ["devs", "ops"]) == acting_user(connect(kubeconfig=str(path)))
    assert ("bob", ["admins"]) == acting_user(connect(kubeconfig=str(path), impersonate="bob",
                                                      impersonate_groups=["admins"]))


def test_rbac_judges_the_impersonated_user(control_plane: Any, namespace: str, tmp_path: Path) -> None:
    """A user allowed to impersonate ``jane`` only: as ``jane`` it is refused what jane may
    not do, in a message naming jane; impersonating anyone else is refused, naming them."""
    from externalauth.errors import ForbiddenError
    from externalauth.kube.api import Kube

    user = f"mallory-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "clusterrole", f"{user}-impersonates-jane", "--verb=impersonate",
                          "--resource=users", "--resource-name=jane")
    control_plane.kubectl("create", "clusterrolebinding", f"{user}-impersonates-jane",
                          f"--clusterrole={user}-impersonates-jane", f"--user={user}")
    minted = control_plane.mint_user(user)

    as_jane = Kube(connect(kubeconfig=str(with_user_fields(minted, tmp_path / "jane", **{"as": "jane"}))))
    wait_for(lambda: acting_user(as_jane.client)[0] == "jane", timeout=30, message="the binding to take effect")
    with pytest.raises(ForbiddenError, match='User "jane" cannot list resource "externalauthlinks"'):
        as_jane.list_links(namespace)

    as_root = Kube(connect(kubeconfig=str(minted), impersonate="root"))
    with pytest.raises(ForbiddenError) as refused:
        as_root.list_links(namespace)
    assert f'users "root" is forbidden: User "{user}" cannot impersonate' in str(refused.value)


def test_the_cli_acts_as_the_kubeconfig_users_as(control_plane: Any, kubeconfig: Path, namespace: str,
                                                 tmp_path: Path) -> None:
    """``externalauth status`` with a kubeconfig whose user has ``as: jane``: refused as jane
    (the admin itself could list)."""
    wait_for(lambda: cli("status", "-n", namespace, "--kubeconfig", str(kubeconfig), kubeconfig_env="").returncode
             == 0, timeout=30, message="the admin to list links (a control plane just started answers 429)")
    path = with_user_fields(kubeconfig, tmp_path / "kubeconfig", **{"as": "jane"})
    done = cli("status", "-n", namespace, "--kubeconfig", str(path), kubeconfig_env="")
    assert 1 == done.returncode, done.stderr
    assert 'User "jane" cannot list resource "externalauthlinks"' in done.stderr


class CertificatePlugin:
    """An exec plugin answering a client certificate and key (as Teleport's ``tsh`` does),
    those of a user the control plane's client CA signed."""

    def __init__(self, directory: Path, minted: Path) -> None:
        user = yaml.safe_load(minted.read_text())["users"][0]["user"]
        answer = {"apiVersion": V1, "kind": "ExecCredential", "status": {
            "clientCertificateData": base64.b64decode(user["client-certificate-data"]).decode(),
            "clientKeyData": base64.b64decode(user["client-key-data"]).decode(),
            "expirationTimestamp": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        (directory / "answer.json").write_text(json.dumps(answer))
        self.path = directory / "tsh"
        self.path.write_text(f"#!/bin/sh\ncat {directory / 'answer.json'}\n")
        self.path.chmod(0o755)

    def user(self) -> dict[str, Any]:
        return {"exec": {"apiVersion": V1, "command": str(self.path), "interactiveMode": "Never"}}

    def kubeconfig(self, control_plane: Any, path: Path, namespace: str) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster_entry(control_plane)}],
            "users": [{"name": "tsh", "user": self.user()}],
            "contexts": [{"name": "tsh", "context": {"cluster": "test", "user": "tsh", "namespace": namespace}}],
            "current-context": "tsh"}))
        return path


def test_an_exec_plugin_may_answer_a_client_certificate(control_plane: Any, namespace: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client proves itself with the certificate the plugin answered (the API server
    names its user and groups), and leaves no file of the key behind; ``externalauth status``
    works through it."""
    name = f"tsh-user-{uuid.uuid4().hex[:6]}"
    plugin = CertificatePlugin(tmp_path, control_plane.mint_user(name, groups=["teleport"]))
    control_plane.kubectl("create", "role", name, "--verb=get,list,watch",
                          "--resource=externalauthlinks.externalauth.io", "-n", namespace)
    control_plane.kubectl("create", "rolebinding", name, f"--role={name}", f"--user={name}", "-n", namespace)
    path = plugin.kubeconfig(control_plane, tmp_path / "kubeconfig", namespace)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    assert (name, ["teleport"]) == acting_user(connect(kubeconfig=str(path)))
    assert [] == list(scratch.iterdir())
    wait_for(lambda: cli("status", "--kubeconfig", str(path), kubeconfig_env="").returncode == 0, timeout=30,
             message="externalauth status to list the links through the plugin's certificate")


def test_the_operator_runs_through_an_exec_plugin_answering_a_client_certificate(
        world: World, control_plane: Any, make_operator: Any, tmp_path: Path) -> None:
    """``externalauth run`` whose kubeconfig user is a plugin answering the client
    certificate of a user bound to the operator's ClusterRole: kopf's provider watch logs in
    with it (a provider made after the start is seen), and our own writes persist a refresh."""
    minted = least_privileged_kubeconfig(control_plane, f"operator-tsh-{uuid.uuid4().hex[:6]}")
    plugin = CertificatePlugin(tmp_path, minted)
    operator = make_operator(namespaces=[world.ns],
                             kubeconfig=plugin.kubeconfig(control_plane, tmp_path / "kubeconfig", world.ns))
    world.make_provider()
    ready_link(world, "first")
    refresh_persists(world, "first")
    assert operator.proc.poll() is None


def _proxy_url(proxy: ConnectProxy, cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster["proxy-url"] = proxy.url


def _https_proxy(proxy: ConnectProxy, cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)


@pytest.mark.parametrize("route", [pytest.param(_proxy_url, id="the kubeconfig's proxy-url"),
                                   pytest.param(_https_proxy, id="HTTPS_PROXY")])
def test_the_api_server_is_reached_through_a_connect_proxy(control_plane: Any, kubeconfig: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, route: Any) -> None:
    """Through a CONNECT proxy (the one HTTP stack's pool), the tunnelled TLS is the
    kubeconfig's (its CA, the admin's client certificate): the API server names the admin,
    and the proxy tunnelled to the API server."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    with ConnectProxy() as proxy:
        route(proxy, doc["clusters"][0]["cluster"], monkeypatch)
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        name, _ = acting_user(connect(kubeconfig=str(path)))
        assert (name, {f"127.0.0.1:{control_plane.secure_port}"}) == (
            acting_user(connect(kubeconfig=str(kubeconfig)))[0], set(proxy.tunnels))
