"""docs/install.md on a real node: the chart installed with ``helm install``, the operator
pod Ready through its probes, and a workspace Deployment (examples/) whose ``git fetch``
keeps working across a forced refresh that revokes the old token at the provider.

The provider is the HTTPS simulator on loopback, serving a git repository over smart HTTP
to holders of a live access token. Every pod uses ``hostNetwork`` (the node has no pod
network, see tests/harness/node.py), so the operator reaches the API server and the
simulator on 127.0.0.1, and so does git in the workspace.

No token is ever printed: the tests compare hashes and booleans, never token values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from externalauth.policy.sharding import shard_of
from providersim import Simulator, gitserving
from tests.harness.node import Node
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.harness.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "externalauth-operator"
EXAMPLES = REPO_ROOT / "examples"
RELEASE = "externalauth-operator"
# The chart runs the operator in this many shards (one Deployment each, `--shard I/N`):
# the workspace's namespace is served by one, the test below puts a link in each.
SHARDS = 2
OPERATOR_NS = "externalauth-system"
USER_NS = "alice"
LINK, SECRET, PROVIDER = "github", "github-token", "github"  # the names examples/ use
GIT_REPO = "demo"
SECRET_DIR = "/var/run/externalauth"  # where the example mounts the Secret
CREDENTIALS = f"{SECRET_DIR}/git-credentials"
HELPER_DIR = "/opt/externalauth/bin"
HELPER_SCRIPT = REPO_ROOT / "scripts" / "git-credential-externalauth"
CA_DIR = "/etc/externalauth-ca"
#: kubelet rewrites a mounted Secret at its next sync of the pod (syncFrequency, 5 s
#: here; ~60 s by default) plus its cache's TTL: well within this.
PROPAGATION_DEADLINE = 120.0

# Node start, helm install and the rollouts take tens of seconds on 2 busy cores.
pytestmark = pytest.mark.timeout(600)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (shard I listens on port + I)."""
    for _ in range(100):
        first = _free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", first + i))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Cluster:
    """kubectl/helm as an admin of the node, plus the few reads the tests need."""

    def __init__(self, node: Node, helm: str, home: Path) -> None:
        self.node = node
        self.helm_bin = helm
        self.home = home

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return self.node.kubectl(*args, input=input, timeout=timeout).stdout

    def helm(self, *args: str) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.node.kubeconfig), "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_DATA_HOME": str(self.home / "data")}
        res = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, env=env, timeout=300)
        assert 0 == res.returncode, f"helm {args[0]}: {res.stderr}"
        return res.stdout

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json"))
        return result

    def secret_data(self, name: str, namespace: str) -> dict[str, str]:
        data = self.get("secret", name, namespace).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def pod_of(self, app_label: str, namespace: str) -> dict[str, Any]:
        pods = json.loads(self.kubectl("get", "pods", "-n", namespace, "-l", app_label, "-o", "json"))["items"]
        assert 1 == len(pods), [p["metadata"]["name"] for p in pods]
        result: dict[str, Any] = pods[0]
        return result

    def exec(self, target: str, namespace: str, *command: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl exec in ``target`` (a pod name or deploy/NAME)."""
        res = self.node.kubectl("exec", "-n", namespace, target, "--", *command, check=False, timeout=120)
        if check:
            assert 0 == res.returncode, f"{' '.join(command)} in {target}: {res.stderr}"
        return res


# -- fixtures: the steps of docs/install.md ------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The provider, with one OAuth app and a git repository."""
    with Simulator(mode="github", access_token_lifetime=3600) as s:
        s.register_client(CLIENT_ID, CLIENT_SECRET)
        s.git.create(GIT_REPO, {"README.md": "a repository only live tokens may fetch\n"})
        yield s


@pytest.fixture(scope="module")
def cluster(node: Node, helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(node, helm, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """docs/install.md section 3 on this node: helm install with the values of a node whose API
    server is on loopback, in SHARDS shards; the CRDs Established; every shard's Deployment
    rolled out. Returns the pods, shard I's at index I."""
    values = {
        "shards": SHARDS,
        # the image built here, imported with ctr (docs/install.md section 1); the chart's
        # default is the published ghcr.io image
        "image": {"repository": "localhost/externalauth-operator", "pullPolicy": "Never"},
        "hostNetwork": True,
        "metrics": {"port": _free_ports(SHARDS), "bindAddress": "127.0.0.1"},
        "health": {"port": _free_ports(SHARDS)},
        # A namespace deleted with a link whose provider is down waits this long (default 5m).
        "operator": {"extraArgs": ["--revocation-timeout=20s"], "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(cluster.node.apiserver_port)},
        ]},
    }
    values_file = tmp_path_factory.mktemp("values") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    cluster.helm("install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, "--create-namespace",
                 "--values", str(values_file))
    cluster.kubectl("wait", "--for=condition=Established", "crd/externalauthlinks.externalauth.io",
                    "crd/externalauthproviders.externalauth.io", "--timeout=60s")
    for i in range(SHARDS):
        cluster.kubectl("-n", OPERATOR_NS, "rollout", "status", f"deployment/{RELEASE}-shard-{i}",
                        "--timeout=180s", timeout=200)
    return [cluster.pod_of(f"app.kubernetes.io/name=externalauth-operator,externalauth.io/shard={i}", OPERATOR_NS)
            for i in range(SHARDS)]


@pytest.fixture(scope="module")
def workspace(cluster: Cluster, release: dict[str, Any], sim: Simulator) -> dict[str, Any]:
    """docs/install.md section 4 with examples/: the provider (pointed at the simulator), a
    token Secret and a link in namespace alice, Ready; then the workspace Deployment, rolled
    out. Returns its pod."""
    provider = (EXAMPLES / "provider-github-app.yaml").read_text().replace(
        "Iv1.0123456789abcdef", CLIENT_ID).replace("REPLACE_WITH_THE_GITHUB_APP_CLIENT_SECRET", CLIENT_SECRET)
    docs = [d for d in yaml.safe_load_all(provider) if d]
    for d in docs:
        if d["kind"] == "ExternalAuthProvider":
            d["spec"] |= {"baseURL": sim.url, "validateURL": f"{sim.url}/user", "caBundle": sim.ca_pem}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    cluster.node.create_namespace(USER_NS)
    grant = sim.issue_grant(CLIENT_ID, login="alice")
    assert grant.refresh_token is not None
    secret = (EXAMPLES / "token-secret.yaml").read_text().replace(
        "REPLACE_WITH_ACCESS_TOKEN", grant.access_token).replace("REPLACE_WITH_REFRESH_TOKEN", grant.refresh_token)
    cluster.kubectl("apply", "-n", USER_NS, "-f", "-", input=secret)
    cluster.kubectl("apply", "-n", USER_NS, "-f", str(EXAMPLES / "link.yaml"))
    cluster.kubectl("wait", "-n", USER_NS, "--for=condition=Ready", f"externalauthlink/{LINK}", "--timeout=120s",
                    timeout=150)
    # The example Secret has no expiry: the operator refreshes at once to learn it (contract
    # section 3); the workspace mounts the expiry key, so it must be there first.
    wait_for(lambda: "expiry" in cluster.secret_data(SECRET, USER_NS), timeout=60, interval=1.0,
             message="the operator to write the token's expiry")

    # The workspace example as written, but with an image this node has, on the host
    # network, trusting the simulator's CA, and git asking the credential helper
    # (`credential.helper externalauth`, docs/user-guide.md section 4) instead of the store
    # file: the helper script (all an image without Python needs) from a ConfigMap on PATH,
    # the token, its expiry and the git-credentials key (the host and user) mounted.
    cluster.kubectl("create", "configmap", "provider-ca", "-n", USER_NS, f"--from-literal=ca.pem={sim.ca_pem}")
    cluster.kubectl("create", "configmap", "git-helper", "-n", USER_NS, f"--from-file={HELPER_SCRIPT}")
    [deployment] = [d for d in yaml.safe_load_all((EXAMPLES / "workspace-deployment.yaml").read_text()) if d]
    pod_spec = deployment["spec"]["template"]["spec"]
    [container] = pod_spec["containers"]
    container |= {"image": cluster.node.images["workspace"].ref, "imagePullPolicy": "Never"}
    helper_env = {"GIT_CONFIG_VALUE_0": "externalauth", "EXTERNALAUTH_SECRET_DIR": SECRET_DIR,
                  "PATH": f"{HELPER_DIR}:/usr/local/bin:/usr/bin:/bin", "GIT_SSL_CAINFO": f"{CA_DIR}/ca.pem"}
    container["env"] = [e for e in container["env"] if e["name"] not in helper_env] + [
        {"name": k, "value": v} for k, v in helper_env.items()]
    container["volumeMounts"] += [{"name": "provider-ca", "mountPath": CA_DIR, "readOnly": True},
                                  {"name": "git-helper", "mountPath": HELPER_DIR, "readOnly": True}]
    [secret_volume] = [v for v in pod_spec["volumes"] if v.get("secret", {}).get("secretName") == SECRET]
    secret_volume["secret"]["items"] = [{"key": k, "path": k} for k in ("access_token", "expiry", "git-credentials")]
    pod_spec["volumes"] += [{"name": "provider-ca", "configMap": {"name": "provider-ca"}},
                            {"name": "git-helper", "configMap": {"name": "git-helper", "defaultMode": 0o555}}]
    pod_spec["hostNetwork"] = True
    cluster.kubectl("apply", "-n", USER_NS, "-f", "-", input=yaml.safe_dump(deployment))
    cluster.kubectl("-n", USER_NS, "rollout", "status", "deployment/workspace", "--timeout=120s", timeout=150)
    return cluster.pod_of("app=workspace", USER_NS)


# -- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("shard", range(2), ids=lambda i: f"shard {i}")
def test_the_operator_pod_is_running_and_ready_through_its_probes(cluster: Cluster, release: list[dict[str, Any]],
                                                                  shard: int) -> None:
    """kubelet ran the chart's startup, readiness and liveness probes on /healthz and the pod
    became Ready without a restart, under the chart's non-root, read-only security context."""
    pod = cluster.get("pod", release[shard]["metadata"]["name"], OPERATOR_NS)
    assert f"--shard={shard}/{SHARDS}" in pod["spec"]["containers"][0]["args"]
    [status] = pod["status"]["containerStatuses"]
    [container] = pod["spec"]["containers"]
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    probes = {k: container[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert ("Running", "True", True, True, 0) == (
        pod["status"]["phase"], conditions["Ready"], status["started"], status["ready"], status["restartCount"])
    assert {"startupProbe": "/healthz", "readinessProbe": "/healthz", "livenessProbe": "/healthz"} == probes
    user = cluster.exec(release[shard]["metadata"]["name"], OPERATOR_NS, "/usr/bin/python3", "-c",
                        "import os; print(os.getuid(), os.access('/', os.W_OK))").stdout.split()
    assert ["65532", "False"] == user


def test_git_fetch_in_the_workspace_works_across_a_refresh(cluster: Cluster, workspace: dict[str, Any],
                                                            sim: Simulator) -> None:
    """git clone through the credential helper (git-credential-externalauth reading the mounted
    Secret); a forced refresh revokes that token at the provider; once kubelet has rewritten
    the mounted files, git fetch in the same pod gets the commit made after the refresh."""
    url = sim.git_url(GIT_REPO)
    cluster.exec("deploy/workspace", USER_NS, "git", "clone", "--quiet", url, "demo")
    cloned = cluster.exec("deploy/workspace", USER_NS, "git", "-C", "demo", "rev-parse", "HEAD").stdout.strip()
    assert sim.git.head(GIT_REPO) == cloned

    before = cluster.secret_data(SECRET, USER_NS)
    cli = shutil.which("externalauth", path=str(Path(sys.executable).parent))
    assert cli is not None
    refreshed = subprocess.run([cli, "refresh", LINK, "-n", USER_NS, "--wait", "--timeout", "90s",
                                "--kubeconfig", str(cluster.node.kubeconfig)],
                               capture_output=True, text=True, timeout=120)
    assert 0 == refreshed.returncode, refreshed.stderr
    after = cluster.secret_data(SECRET, USER_NS)
    token_changed = before["access_token"] != after["access_token"]
    old_token_live = sim.provider.access_token_live(before["access_token"])
    old_token_fetches = requests.get(f"{url}/info/refs?service=git-upload-pack", verify=sim.ca_file, timeout=10,
                                     auth=(gitserving.GIT_USER, before["access_token"])).status_code
    assert (True, False, 401) == (token_changed, old_token_live, old_token_fetches)

    later = sim.git.commit(GIT_REPO, {"CHANGES.md": "pushed after the refresh\n"}, message="after the refresh")
    wanted = _sha256(after["git-credentials"])
    t0 = time.monotonic()

    def mounted_file_is_new() -> bool:
        res = cluster.exec("deploy/workspace", USER_NS, "sha256sum", CREDENTIALS, check=False)
        return res.returncode == 0 and res.stdout.split()[:1] == [wanted]

    wait_for(mounted_file_is_new, timeout=PROPAGATION_DEADLINE, interval=1.0,
             message="kubelet to write the refreshed git-credentials into the workspace pod")
    helper = cluster.exec("deploy/workspace", USER_NS, "sh", "-c",
                          "printf 'protocol=https\\nhost=%s\\n\\n' \"$1\" | git credential fill", "sh",
                          url.split("/")[2])
    answered = dict(line.split("=", 1) for line in helper.stdout.splitlines() if "=" in line)
    assert (gitserving.GIT_USER, True) == (answered.get("username"),
                                          answered.get("password") == after["access_token"])
    print(f"[e2e] kubelet propagated the refreshed Secret in {time.monotonic() - t0:.1f}s")

    cluster.exec("deploy/workspace", USER_NS, "git", "-C", "demo", "fetch", "--quiet")
    fetched = cluster.exec("deploy/workspace", USER_NS, "git", "-C", "demo", "rev-parse", "origin/main").stdout.strip()
    same_pod = cluster.pod_of("app=workspace", USER_NS)
    assert (later, workspace["metadata"]["uid"], 0) == (
        fetched, same_pod["metadata"]["uid"], same_pod["status"]["containerStatuses"][0]["restartCount"])


def test_the_builtin_edit_and_view_roles_grant_links_through_aggregation(cluster: Cluster,
                                                                          release: dict[str, Any]) -> None:
    """kube-controller-manager aggregates the chart's user roles into the built-in ones: a
    developer with ``edit`` in a namespace may create links there but not write their status,
    one with ``view`` may only read them; both may read providers (docs/install.md section 6)."""
    cluster.node.create_namespace("dev")
    cluster.kubectl("create", "rolebinding", "bob-edit", "-n", "dev", "--clusterrole=edit", "--user=bob")
    cluster.kubectl("create", "rolebinding", "carol-view", "-n", "dev", "--clusterrole=view", "--user=carol")

    def can(user: str, verb: str, resource: str, *extra: str) -> str:
        res = cluster.node.kubectl("auth", "can-i", verb, resource, *extra, "-n", "dev", f"--as={user}",
                                   check=False)
        return res.stdout.strip()

    links, providers = "externalauthlinks.externalauth.io", "externalauthproviders.externalauth.io"
    wait_for(lambda: can("bob", "create", links) == "yes", timeout=60,
             message="the edit role to aggregate the chart's link rules")
    asked = [("bob", "create", links), ("bob", "patch", links, "--subresource=status"), ("bob", "get", providers),
             ("carol", "list", links), ("carol", "create", links), ("carol", "get", providers)]
    assert ["yes", "no", "yes", "yes", "no", "yes"] == [can(*q) for q in asked]


def test_deleting_a_namespace_never_hangs_on_an_unreachable_provider(cluster: Cluster,
                                                                     release: list[dict[str, Any]]) -> None:
    """A link with revokeOnDelete whose provider does not answer: deleting its namespace (the
    namespace controller deletes the link, whose finalizer holds it) ends once the operator
    gives up after --revocation-timeout (20s here), with a RevocationFailed event on the way
    (contract §2, §9.17)."""
    ns, provider = "leaving", "unreachable"
    cluster.kubectl("create", "secret", "generic", f"{provider}-client", "-n", OPERATOR_NS,
                    "--from-literal=clientSecret=s")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthProvider", "metadata": {"name": provider},
        # Nothing listens on port 9 of loopback: every call is refused at once.
        "spec": {"type": "gitlab", "clientID": "c", "baseURL": "https://127.0.0.1:9", "validateURL": "",
                 "clientSecretRef": {"namespace": OPERATOR_NS, "name": f"{provider}-client",
                                     "key": "clientSecret"}}}))
    cluster.node.create_namespace(ns)
    cluster.kubectl("create", "secret", "generic", "tok", "-n", ns, "--from-literal=access_token=at",
                    "--from-literal=refresh_token=rt", "--from-literal=expiry=2099-01-01T00:00:00Z")
    cluster.kubectl("label", "secret", "tok", "-n", ns, f"externalauth.io/provider={provider}")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink", "metadata": {"name": "link"},
        "spec": {"providerName": provider, "secretName": "tok", "revokeOnDelete": True, "validate": False}}))
    wait_for(lambda: "externalauth.io/revoke" in cluster.get("externalauthlink", "link", ns)["metadata"].get(
        "finalizers", []), timeout=60, message="the revoke finalizer on the link")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(lambda: cluster.node.kubectl("get", "namespace", ns, check=False).returncode != 0, timeout=180,
             message=f"namespace {ns} to be deleted")
    # The event could not be posted into a terminating namespace; the metric says it.
    # the shard that serves the namespace counted it
    [args] = [c["args"] for c in release[shard_of(ns, SHARDS)]["spec"]["containers"] if c["name"] == "operator"]
    port = next(a.split("=", 1)[1] for a in args if a.startswith("--metrics-port="))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f'externalauth_revocations_total{{provider="{provider}",result="failed"}} 1.0' in metrics


def test_each_shard_serves_the_links_of_its_own_namespaces(cluster: Cluster, workspace: dict[str, Any],
                                                           sim: Simulator) -> None:
    """Issue 19: with `shards: 2`, a link in a namespace of each shard is refreshed (its
    token Secret rewritten with new tokens) and Ready: both shards' pods do their work."""
    spaces = {}
    for k in range(100):
        spaces.setdefault(shard_of(f"team-{k}", SHARDS), f"team-{k}")
        if len(spaces) == SHARDS:
            break
    assert sorted(spaces) == list(range(SHARDS))
    secret = (EXAMPLES / "token-secret.yaml").read_text()
    before = {}
    for shard, ns in sorted(spaces.items()):
        cluster.node.create_namespace(ns)
        grant = sim.issue_grant(CLIENT_ID, login=f"user-of-shard-{shard}")
        assert grant.refresh_token is not None
        before[ns] = grant.refresh_token
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=secret.replace(
            "REPLACE_WITH_ACCESS_TOKEN", grant.access_token).replace("REPLACE_WITH_REFRESH_TOKEN", grant.refresh_token))
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "link.yaml"))
    for ns in spaces.values():
        cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", f"externalauthlink/{LINK}", "--timeout=120s",
                        timeout=150)
        wait_for(lambda ns=ns: cluster.secret_data(SECRET, ns)["refresh_token"] != before[ns], timeout=120,
                 message=f"the token in {ns} (shard {shard_of(ns, SHARDS)}) to be refreshed")
