"""Kubeconfig merging and selection as kubectl does it, and exec credential plugin answers.

Pure: parsed documents in, the selected context (or the one-line error) out.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from externalauth.errors import PermanentError
from externalauth.kube import kubeconfigs
from externalauth.model.secure import SecretStr


def config(*, clusters: dict[str, dict[str, Any]] | None = None, users: dict[str, dict[str, Any]] | None = None,
           contexts: dict[str, dict[str, Any]] | None = None, current: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in (clusters or {}).items()],
        "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
        "contexts": [{"name": n, "context": c} for n, c in (contexts or {}).items()],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


A = config(clusters={"prod": {"server": "https://a.example:6443"}},
           users={"alice": {"token": "from-a"}},
           contexts={"prod": {"cluster": "prod", "user": "alice", "namespace": "team-a"}},
           current="prod")
B = config(clusters={"prod": {"server": "https://b.example:6443"}, "dev": {"server": "https://dev.example"}},
           users={"alice": {"token": "from-b"}, "bob": {"tokenFile": "/var/bob"}},
           contexts={"prod": {"cluster": "dev", "user": "bob"}, "dev": {"cluster": "dev", "user": "bob"}},
           current="dev")
NO_CURRENT = config(contexts={"early": {"cluster": "dev", "user": "bob", "namespace": "x"}})
CROSS = config(contexts={"mixed": {"cluster": "dev", "user": "alice"}})


def selected(name: str, server: str, user: dict[str, Any], namespace: str = "default") -> kubeconfigs.Selection:
    return kubeconfigs.Selection(context=name, cluster={"server": server}, user=user, namespace=namespace,
                                 namespace_set=namespace != "default")


MERGES = [
    pytest.param([("/a/config", A)], None,
                 selected("prod", "https://a.example:6443", {"token": "from-a"}, "team-a"),
                 id="one file: its current context, cluster, user and namespace"),
    pytest.param([("/a/config", A), ("/b/config", B)], None,
                 selected("prod", "https://a.example:6443", {"token": "from-a"}, "team-a"),
                 id="a cluster, user and context named in two files come from the first file"),
    pytest.param([("/b/config", B), ("/a/config", A)], None,
                 selected("dev", "https://dev.example", {"tokenFile": "/var/bob"}),
                 id="current-context comes from the first file that sets it"),
    pytest.param([("/n/config", NO_CURRENT), ("/b/config", B), ("/a/config", A)], None,
                 selected("dev", "https://dev.example", {"tokenFile": "/var/bob"}),
                 id="a file without current-context leaves it to the next file that sets it"),
    pytest.param([("/n/config", NO_CURRENT), ("/b/config", B)], "early",
                 selected("early", "https://dev.example", {"tokenFile": "/var/bob"}, "x"),
                 id="a context in the first file may use a cluster and a user from a later file"),
    pytest.param([("/a/config", A), ("/c/config", CROSS), ("/b/config", B)], "mixed",
                 selected("mixed", "https://dev.example", {"token": "from-a"}),
                 id="--context picks a context from any file; its user is the first file's"),
    pytest.param([("/e/config", None), ("/a/config", A)], None,
                 selected("prod", "https://a.example:6443", {"token": "from-a"}, "team-a"),
                 id="an empty file contributes nothing"),
    pytest.param([("/a/config", A), ("/b/config", B)], "dev",
                 selected("dev", "https://dev.example", {"tokenFile": "/var/bob"}),
                 id="a context without a namespace uses default"),
]


@pytest.mark.parametrize(("files", "context", "expected"), MERGES)
def test_merging_and_selecting(files: list[tuple[str, dict[str, Any] | None]], context: str | None,
                               expected: kubeconfigs.Selection) -> None:
    assert expected == kubeconfigs.select(kubeconfigs.merge(files), context=context)


def test_relative_file_references_resolve_against_the_file_that_holds_them() -> None:
    """Each file's relative paths are relative to its own directory; absolute paths and bare
    plugin names (looked up on PATH) are kept."""
    first = config(clusters={"c": {"server": "https://c", "certificate-authority": "pki/ca.crt"}},
                   users={"u": {"client-certificate": "/abs/u.crt", "client-key": "u.key"}})
    second = config(clusters={"d": {"server": "https://d", "certificate-authority": "/etc/ca.crt"}},
                    users={"v": {"tokenFile": "../tokens/v"},
                           "p": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/plugin"}},
                           "q": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}},
                    contexts={"c": {"cluster": "c", "user": "u"}, "d": {"cluster": "d", "user": "v"}})
    merged = kubeconfigs.merge([("/home/me/.kube/config", first), ("/srv/cfg/other.yaml", second)])
    assert {"c": {"server": "https://c", "certificate-authority": "/home/me/.kube/pki/ca.crt"},
            "d": {"server": "https://d", "certificate-authority": "/etc/ca.crt"}} == {
        c["name"]: c["cluster"] for c in merged["clusters"]}
    assert {"u": {"client-certificate": "/abs/u.crt", "client-key": "/home/me/.kube/u.key"},
            "v": {"tokenFile": "/srv/tokens/v"},
            "p": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/srv/cfg/bin/plugin"}},
            "q": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}} == {
        u["name"]: u["user"] for u in merged["users"]}


REFUSALS = [
    pytest.param([("/n/config", NO_CURRENT)], None, "sets no current-context",
                 id="no current-context and no --context"),
    pytest.param([("/a/config", A)], "nope", "has no context 'nope'", id="an unknown context"),
    pytest.param([("/c/config", CROSS)], "mixed", "names a cluster that is not in the kubeconfig",
                 id="a context whose cluster is in no file"),
    pytest.param([("/c/config", config(clusters={"dev": {"server": "https://d"}},
                                       contexts={"mixed": {"cluster": "dev", "user": "alice"}}))],
                 "mixed", "names a user that is not in the kubeconfig",
                 id="a context whose user is in no file"),
    pytest.param([("/s/config", config(clusters={"c": {}}, contexts={"c": {"cluster": "c"}}, current="c"))], None,
                 "has no server", id="a cluster without a server"),
    pytest.param([("/o/config", config(clusters={"c": {"server": "https://c"}},
                                       users={"u": {"auth-provider": {"name": "oidc"}}},
                                       contexts={"c": {"cluster": "c", "user": "u"}}, current="c"))], None,
                 "use an exec credential plugin", id="a legacy auth-provider user"),
    pytest.param([("/x/config", {"clusters": "nope"})], None, "clusters is not a list",
                 id="a file whose clusters are not a list"),
]


@pytest.mark.parametrize(("files", "context", "message"), REFUSALS)
def test_a_kubeconfig_that_cannot_be_used_is_refused_in_one_line(
        files: list[tuple[str, dict[str, Any]]], context: str | None, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        kubeconfigs.select(kubeconfigs.merge(files), context=context)


def test_a_pod_service_account_is_a_token_file_not_a_copy_of_the_token() -> None:
    doc = kubeconfigs.in_cluster(host="10.0.0.1", port="443", directory="/var/run/secrets/kubernetes.io/sa")
    assert kubeconfigs.Selection(
        context="in-cluster",
        cluster={"server": "https://10.0.0.1:443", "certificate-authority": "/var/run/secrets/kubernetes.io/sa/ca.crt"},
        user={"tokenFile": "/var/run/secrets/kubernetes.io/sa/token"},
        namespace="default") == kubeconfigs.select(doc, context=None)


# --- exec credential plugins ------------------------------------------------------------------

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
TOKEN = "plugin-token-c4n4ry"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\n" + TOKEN + "\n-----END PRIVATE KEY-----\n"


def credential(api_version: str = V1, **status: Any) -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}).encode()


ANSWERS = [
    pytest.param(credential(token=TOKEN, expirationTimestamp="2030-01-02T03:04:05Z"), V1,
                 kubeconfigs.Credential(SecretStr(TOKEN), dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
                 id="v1: a token with its expiry"),
    pytest.param(credential(V1BETA1, token=TOKEN), V1BETA1, kubeconfigs.Credential(SecretStr(TOKEN), None),
                 id="v1beta1: a token without an expiry is kept until refused"),
    pytest.param(credential(token=TOKEN, expirationTimestamp="2030-01-02T03:04:05.250+02:00"), V1,
                 kubeconfigs.Credential(SecretStr(TOKEN), dt.datetime(2030, 1, 2, 1, 4, 5, 250000, tzinfo=dt.UTC)),
                 id="an expiry with fractions and an offset"),
    pytest.param(b"not json " + TOKEN.encode(), V1, "not JSON", id="output that is not JSON"),
    pytest.param(json.dumps({"kind": "Other", "token": TOKEN}).encode(), V1, "did not print an ExecCredential",
                 id="JSON that is not an ExecCredential"),
    pytest.param(credential(V1BETA1, token=TOKEN), V1, "answered apiVersion",
                 id="an answer in another apiVersion than asked"),
    pytest.param(credential(token=""), V1, "neither a token nor a client certificate", id="an empty token"),
    pytest.param(credential(clientCertificateData=CERT, clientKeyData=KEY, expirationTimestamp="2030-01-02T03:04:05Z"),
                 V1, kubeconfigs.Credential(None, dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                                            client_certificate=CERT, client_key=SecretStr(KEY)),
                 id="a client certificate and its key instead of a token (Teleport's tsh)"),
    pytest.param(credential(token=TOKEN, clientCertificateData=CERT, clientKeyData=KEY), V1,
                 kubeconfigs.Credential(SecretStr(TOKEN), None, client_certificate=CERT, client_key=SecretStr(KEY)),
                 id="both a token and a client certificate"),
    pytest.param(credential(clientCertificateData=CERT), V1, "certificate without its key",
                 id="a client certificate without its key"),
    pytest.param(credential(clientKeyData=KEY), V1, "key without its certificate",
                 id="a key without its certificate"),
    pytest.param(credential(clientCertificateData="Q0VSVA==", clientKeyData=KEY), V1, "is not PEM",
                 id="a certificate that is not PEM (base64, as in a kubeconfig)"),
    pytest.param(credential(token=7), V1, "token is not a string", id="a token that is not a string"),
    pytest.param(credential(token=TOKEN, expirationTimestamp="tomorrow " + TOKEN), V1, "not an RFC 3339 time",
                 id="an expiry that is not a time"),
    pytest.param(credential(token=TOKEN, expirationTimestamp="2030-01-02T03:04:05"), V1, "not an RFC 3339 time",
                 id="an expiry without a timezone"),
    pytest.param(json.dumps({"apiVersion": V1, "kind": "ExecCredential"}).encode(), V1, "has no status",
                 id="an ExecCredential without status"),
]


@pytest.mark.parametrize(("output", "api_version", "expected"), ANSWERS)
def test_what_an_exec_plugin_printed(output: bytes, api_version: str,
                                     expected: kubeconfigs.Credential | str) -> None:
    """A token or a client certificate and its expiry, or a one-line error that never quotes
    the plugin's output."""
    if isinstance(expected, str):
        with pytest.raises(PermanentError, match=expected) as caught:
            kubeconfigs.exec_credential(output, api_version=api_version)
        assert TOKEN not in str(caught.value)
    else:
        assert expected == kubeconfigs.exec_credential(output, api_version=api_version)


EXEC_CONFIGS = [
    pytest.param({"apiVersion": V1, "command": "aws", "args": ["eks", "get-token"]},
                 {"apiVersion": V1, "command": "aws", "args": ["eks", "get-token"], "env": [],
                  "interactiveMode": "IfAvailable"},
                 id="v1 without interactiveMode: IfAvailable"),
    pytest.param({"apiVersion": V1BETA1, "command": "gke-gcloud-auth-plugin", "interactiveMode": "Never",
                  "env": [{"name": "A", "value": "b"}]},
                 {"apiVersion": V1BETA1, "command": "gke-gcloud-auth-plugin", "args": [],
                  "env": [{"name": "A", "value": "b"}], "interactiveMode": "Never"},
                 id="v1beta1 with env and Never"),
    pytest.param({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}, "is not supported",
                 id="v1alpha1 (removed in Kubernetes 1.24)"),
    pytest.param({"apiVersion": V1}, "has no command", id="no command"),
    pytest.param({"apiVersion": V1, "command": "x", "args": "--flag"}, "args are not a list",
                 id="args as a string"),
    pytest.param({"apiVersion": V1, "command": "x", "env": [{"name": "A"}]}, "env is not a list of name/value",
                 id="an env entry without a value"),
    pytest.param({"apiVersion": V1, "command": "x", "interactiveMode": "Sometimes"}, "interactiveMode",
                 id="an unknown interactiveMode"),
]


@pytest.mark.parametrize(("exec_", "expected"), EXEC_CONFIGS)
def test_an_exec_section_is_checked_before_anything_runs(exec_: dict[str, Any],
                                                         expected: dict[str, Any] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(PermanentError, match=expected):
            kubeconfigs.exec_config({"exec": exec_})
    else:
        assert expected == kubeconfigs.exec_config({"exec": exec_})


CLUSTER = {"server": "https://k.example", "tls-server-name": "k", "certificate-authority": "/ca",
           "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}]}

REQUESTS = [
    pytest.param({"apiVersion": V1, "command": "p"}, False,
                 {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}},
                 id="the cluster is not given to a plugin that did not ask for it"),
    pytest.param({"apiVersion": V1BETA1, "command": "p", "provideClusterInfo": True}, True,
                 {"apiVersion": V1BETA1, "kind": "ExecCredential", "spec": {"interactive": True, "cluster": {
                     "server": "https://k.example", "tls-server-name": "k", "certificate-authority-data": "Q0E=",
                     "config": {"audience": "x"}}}},
                 id="provideClusterInfo: the server, TLS settings, CA data and the exec extension"),
]


@pytest.mark.parametrize(("exec_", "interactive", "expected"), REQUESTS)
def test_what_an_exec_plugin_is_given(exec_: dict[str, Any], interactive: bool, expected: dict[str, Any]) -> None:
    assert expected == json.loads(kubeconfigs.exec_request(exec_, cluster=CLUSTER, interactive=interactive,
                                                           ca_data="Q0E="))


# --- where the kubeconfig is looked for (kubectl's order) --------------------------------------

HOME = "/home/u/.kube/config"
LOOKUPS = [
    pytest.param("/x/flag", "/e/one", {"/x/flag", "/e/one", HOME}, True, ["/x/flag"],
                 id="--kubeconfig wins over KUBECONFIG, ~/.kube/config and the pod"),
    pytest.param(None, "/e/one:/e/missing:/e/two:/e/one", {"/e/one", "/e/two", HOME}, True, ["/e/one", "/e/two"],
                 id="KUBECONFIG: every existing file, in order, once; ~/.kube/config is not added"),
    pytest.param(None, "/e/one", {"/e/one"}, True, ["/e/one"],
                 id="in a pod, a KUBECONFIG file wins over the ServiceAccount"),
    pytest.param(None, "", {HOME}, True, [HOME],
                 id="in a pod, ~/.kube/config wins over the ServiceAccount"),
    pytest.param(None, "", {HOME}, False, [HOME], id="~/.kube/config without KUBECONFIG"),
    pytest.param(None, "", set(), True, None, id="in a pod without any kubeconfig: the ServiceAccount"),
    pytest.param(None, "/e/missing", set(), True, None,
                 id="in a pod whose KUBECONFIG names only missing files: the ServiceAccount"),
    pytest.param(None, "::", {HOME}, False, "none of the kubeconfig files in KUBECONFIG exist",
                 id="KUBECONFIG of empty entries does not fall back to ~/.kube/config"),
    pytest.param(None, "/e/missing", {HOME}, False, "none of the kubeconfig files in KUBECONFIG exist",
                 id="KUBECONFIG naming only missing files outside a pod"),
    pytest.param("/x/missing", "", {HOME}, True, "kubeconfig /x/missing does not exist",
                 id="a --kubeconfig that does not exist is an error, not a fallback"),
    pytest.param(None, "", set(), False, "no Kubernetes credentials",
                 id="nothing at all outside a pod"),
]


@pytest.mark.parametrize(("flag", "env", "existing", "in_pod", "expected"), LOOKUPS)
def test_the_kubeconfig_is_looked_for_as_kubectl_does(flag: str | None, env: str, existing: set[str],
                                                      in_pod: bool, expected: list[str] | str | None) -> None:
    """The files to merge (None: the pod's ServiceAccount), or the one-line error."""
    def look() -> list[str] | None:
        return kubeconfigs.files_to_load(flag=flag, env=env, home=HOME, in_cluster=in_pod,
                                         exists=existing.__contains__)

    if isinstance(expected, str):
        with pytest.raises(PermanentError, match=expected):
            look()
    else:
        assert expected == look()


# --- impersonation ----------------------------------------------------------------------------

IMPERSONATIONS = [
    pytest.param({}, None, (), [], id="no as: the user itself"),
    pytest.param({"as": "jane"}, None, (), [("Impersonate-User", "jane")], id="as: one user"),
    pytest.param({"as": "jane", "as-groups": ["devs", "ops"], "as-uid": "u-1"}, None, (),
                 [("Impersonate-User", "jane"), ("Impersonate-Uid", "u-1"),
                  ("Impersonate-Group", "devs"), ("Impersonate-Group", "ops")],
                 id="as-groups: one header per group, with the uid"),
    pytest.param({"as": "jane", "as-user-extra": {"scopes.example/x y": ["a", "b"]}}, None, (),
                 [("Impersonate-User", "jane"), ("Impersonate-Extra-scopes.example%2Fx%20y", "a"),
                  ("Impersonate-Extra-scopes.example%2Fx%20y", "b")],
                 id="as-user-extra: the key percent-encoded, one header per value"),
    pytest.param({"as": "jane", "as-groups": ["devs"]}, "bob", ("admins",),
                 [("Impersonate-User", "bob"), ("Impersonate-Group", "admins")],
                 id="--as and --as-group override the kubeconfig's"),
    pytest.param({}, "bob", (), [("Impersonate-User", "bob")], id="--as without as: in the kubeconfig"),
    pytest.param({}, None, ("admins",), "needs a user to impersonate", id="--as-group without a user"),
    pytest.param({"as-groups": ["devs"]}, None, (), "needs a user to impersonate",
                 id="as-groups without as"),
    pytest.param({"as": ["jane"]}, None, (), "as is not a user name", id="as that is not a string"),
    pytest.param({"as": "jane", "as-groups": "devs"}, None, (), "as-groups is not a list of strings",
                 id="as-groups that is not a list"),
]


@pytest.mark.parametrize(("user", "as_user", "as_groups", "expected"), IMPERSONATIONS)
def test_whom_the_requests_act_as(user: dict[str, Any], as_user: str | None, as_groups: tuple[str, ...],
                                  expected: list[tuple[str, str]] | str) -> None:
    """The ``Impersonate-*`` headers, or the one-line error."""
    if isinstance(expected, str):
        with pytest.raises(PermanentError, match=expected):
            kubeconfigs.impersonation(user, as_user=as_user, as_groups=as_groups)
    else:
        assert expected == kubeconfigs.impersonation(user, as_user=as_user, as_groups=as_groups).headers()
