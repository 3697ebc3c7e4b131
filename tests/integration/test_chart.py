"""The Helm chart (charts/externalauth-operator): lint, render, schema, RBAC, alerts, and a
real ``helm install``/``upgrade``/``uninstall`` against the harness's kube-apiserver.

helm and promtool come from ``hack/build-tools.sh`` (built from the Go module proxy
on first use, cached by version; ``HELM``/``PROMTOOL`` point at binaries you have).
If they cannot be built these tests fail with the build log: they are never skipped.
There is no kubelet here, so no pod runs: the Deployment is checked as rendered and
as accepted by the API server (the e2e tier runs it).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.waiting import wait_for
from tests.harness.world import b64

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "externalauth-operator"
BUILD_TOOLS = REPO / "hack" / "build-tools.sh"
CHECK_CRDS = REPO / "hack" / "check-crds.sh"
ALERT_TESTS = REPO / "tests" / "chart" / "alerts_test.yaml"
RELEASE_NS = "externalauth-system"
CRD_NAMES = ("externalauthlinks.externalauth.io", "externalauthproviders.externalauth.io")

# A cold build of both tools takes minutes (hack/build-tools.sh); the first test waits for it.
pytestmark = pytest.mark.timeout(1200)

#: Metric families of contract §7 (histograms add _bucket/_sum/_count).
CONTRACT_METRICS = {
    "externalauth_refresh_total", "externalauth_refresh_duration_seconds",
    "externalauth_provider_requests_total", "externalauth_validation_total",
    "externalauth_secret_write_conflicts_total", "externalauth_token_expiry_timestamp_seconds",
    "externalauth_links", "externalauth_refresh_token_expiry_timestamp_seconds",
    "externalauth_tokens_lost_total", "externalauth_build_info",
}

EVERYTHING_ON: dict[str, Any] = {
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
NAMESPACED: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b"]}
#: What a cluster with prometheus-operator serves (ServiceMonitor and PrometheusRule are
#: rendered only where their API exists: `helm template --api-versions ...`).
MONITORING = ("monitoring.coreos.com/v1",)
#: Every value issue 18/19 added, switched on.
EVERY_NEW_VALUE: dict[str, Any] = {
    "shards": 2,
    "proxy": {"httpsProxy": "http://proxy.corp.example:3128", "noProxy": ".svc,.cluster.local"},
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    "networkPolicy": {"defaultEgress": {"enabled": True, "apiServerTo": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}},
    "extraObjects": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corp-ca"}, "data": {"ca.pem": "x"}},
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\ndata: {}\n",
    ],
}


# -- tools -------------------------------------------------------------------


class Tools:
    def __init__(self, *, helm: str, promtool: str, home: Path) -> None:
        self.helm_bin = helm
        self.promtool_bin = promtool
        self.env = {**os.environ,
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_DATA_HOME": str(home / "data")}
        self.values_dir = home / "values"
        self.values_dir.mkdir(parents=True, exist_ok=True)

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {res.returncode}:\n{res.stderr}{res.stdout[-2000:]}")
        return res

    def promtool(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.promtool_bin, *args], capture_output=True, text=True, cwd=cwd, timeout=120)

    def values_file(self, values: dict[str, Any]) -> str:
        path = self.values_dir / f"values-{len(list(self.values_dir.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def template(self, values: dict[str, Any] | None = None, *, release: str = "ea",
                 namespace: str = RELEASE_NS, apis: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        args += [f"--api-versions={a}" for a in apis]
        if values:
            args += ["--values", self.values_file(values)]
        return [d for d in yaml.safe_load_all(self.helm(*args).stdout) if d]


@pytest.fixture(scope="session")
def tools(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """helm and promtool from hack/build-tools.sh, its progress shown on the terminal."""
    log: collections.deque[str] = collections.deque(maxlen=60)
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def build() -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(["bash", str(BUILD_TOOLS), "helm", "promtool"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()
        out = proc.stdout.read()
        return subprocess.CompletedProcess(proc.args, proc.wait(), out, "")

    if capman is not None:
        with capman.global_and_fixture_disabled():
            res = build()
    else:
        res = build()
    if res.returncode != 0:
        pytest.fail("hack/build-tools.sh could not build helm/promtool:\n" + "\n".join(log), pytrace=False)
    helm, promtool = res.stdout.split()[-2:]
    return Tools(helm=helm, promtool=promtool, home=tmp_path_factory.mktemp("helm"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


# -- release hygiene ---------------------------------------------------------


def test_chart_version_and_app_version_equal_the_package_version() -> None:
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (package, package)


def test_the_image_tag_defaults_to_the_package_version(tools: Tools) -> None:
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container(tools.template())["image"].endswith(f":{package}")


# -- CRDs --------------------------------------------------------------------


def test_the_chart_renders_exactly_the_crds_of_the_crds_folder(tools: Tools) -> None:
    assert subprocess.run(["bash", str(CHECK_CRDS)], capture_output=True, text=True).returncode == 0
    rendered = {d["metadata"]["name"]: d for d in by_kind(tools.template(), "CustomResourceDefinition")}
    source = {}
    for f in sorted((REPO / "crds").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        source[doc["metadata"]["name"]] = doc
    assert sorted(rendered) == sorted(source)
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert meta.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert crd == source[name], f"{name}: the rendered CRD differs from crds/"


def test_the_crd_drift_check_fails_when_the_chart_copy_differs(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / "hack").mkdir(parents=True)
    shutil.copy(CHECK_CRDS, tree / "hack")
    shutil.copytree(REPO / "crds", tree / "crds")
    copy = tree / "charts" / "externalauth-operator" / "files" / "crds"
    shutil.copytree(CHART / "files" / "crds", copy)
    assert subprocess.run(["bash", str(tree / "hack" / "check-crds.sh")], capture_output=True).returncode == 0
    edited = next(iter(sorted(copy.glob("*.yaml"))))
    edited.write_text(edited.read_text().replace("minLength: 1", "minLength: 2", 1))
    res = subprocess.run(["bash", str(tree / "hack" / "check-crds.sh")], capture_output=True, text=True)
    assert res.returncode == 1 and "differ" in res.stderr


@pytest.mark.parametrize(("values", "expected"), [
    pytest.param({}, "keep", id="by default the CRDs are rendered and kept on uninstall"),
    pytest.param({"crds": {"keep": False}}, "no keep", id="keep false renders them without the keep policy"),
    pytest.param({"crds": {"enabled": False}}, "absent", id="enabled false renders no CRD"),
])
def test_crds_follow_crds_enabled_and_crds_keep(tools: Tools, values: dict[str, Any], expected: str) -> None:
    crds = by_kind(tools.template(values), "CustomResourceDefinition")
    if expected == "absent":
        assert crds == []
        return
    assert len(crds) == 2
    policies = {(c["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") for c in crds}
    assert policies == ({"keep"} if expected == "keep" else {None})


# -- lint and schema ---------------------------------------------------------


@pytest.mark.parametrize("values", [
    pytest.param({}, id="the default values lint clean"),
    pytest.param(NAMESPACED, id="the namespaced values lint clean"),
    pytest.param({**EVERYTHING_ON, **NAMESPACED, "operator": {"logFormat": "json", "logLevel": "debug"}},
                 id="every optional part switched on lints clean"),
    pytest.param(EVERY_NEW_VALUE, id="shards, proxy, extra volumes and objects, default egress lint clean"),
])
def test_helm_lint_strict(tools: Tools, values: dict[str, Any]) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["--values", tools.values_file(values)]
    res = tools.helm(*args, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"replicas": 2}, "additional properties 'replicas' not allowed",
                 id="an unknown top-level value is rejected"),
    pytest.param({"podSecurityContext": {"runAsNonroot": True}}, "additional properties 'runAsNonroot' not allowed",
                 id="a misspelt security context field is rejected"),
    pytest.param({"prometheusRule": {"alerts": {"tokensLost": {"severity": "page", "fro": "5m"}}}},
                 "additional properties 'fro' not allowed", id="a misspelt alert setting is rejected"),
    pytest.param({"replicaCount": "two"}, "replicaCount", id="a value of the wrong type is rejected"),
    pytest.param({"operator": {"logFormat": "xml"}}, "logFormat", id="a log format the operator lacks is rejected"),
    pytest.param({"watchNamespaces": ["Team_A"]}, "watchNamespaces",
                 id="a namespace that is not a DNS label is rejected"),
    pytest.param({"shards": 0}, "shards", id="zero shards are rejected"),
    pytest.param({"proxy": {"httpsProxy": "proxy.corp.example:3128"}}, "httpsProxy",
                 id="a proxy without a scheme is rejected"),
    pytest.param({"admissionPolicy": {"validationActions": ["Block"]}}, "validationActions",
                 id="an admission action Kubernetes lacks is rejected"),
    pytest.param({"networkPolicy": {"defaultEgress": {"enabled": True, "dnsServers": []}}},
                 "additional properties 'dnsServers' not allowed", id="a misspelt egress value is rejected"),
    pytest.param({"extraVolumeMounts": [{"name": "x"}]}, "mountPath",
                 id="a volume mount without a path is rejected"),
])
def test_values_schema_rejects(tools: Tools, values: dict[str, Any], message: str) -> None:
    res = tools.helm("template", "ea", str(CHART), "--values", tools.values_file(values), check=False)
    assert res.returncode != 0, f"helm accepted {values}"
    assert message in res.stderr, res.stderr


def _schema_objects(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    types = node.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from _schema_objects(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _schema_objects(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_objects(node["additionalProperties"], f"{path}.*")


def _passthrough(node: dict[str, Any]) -> bool:
    """A Kubernetes object the API server validates, or a map: its keys are not chart values."""
    return str(node.get("description", "")).startswith(("A Kubernetes", "Helm's global")) or isinstance(
        node.get("additionalProperties"), dict)


def test_the_schema_decides_additional_properties_for_every_object() -> None:
    """additionalProperties: false everywhere, except maps (typed values) and Kubernetes
    objects passed through to the API server (which validates them), each said so."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in _schema_objects(schema, "$"):
        assert "additionalProperties" in node, f"{path}: additionalProperties not set"
        if node["additionalProperties"] is True:
            assert _passthrough(node), f"{path}: open object that is not a Kubernetes type"


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    problems: list[str] = []

    def walk(node: yaml.MappingNode, sub: dict[str, Any], path: str) -> None:
        keys = []
        for key_node, value_node in node.value:
            key = key_node.value
            keys.append(key)
            here = f"{path}{key}"
            line = key_node.start_mark.line
            if line == 0 or not lines[line - 1].strip().startswith("#"):
                problems.append(f"{here} (line {line + 1}) has no comment above it")
            child = (sub.get("properties") or {}).get(key)
            if child is None:
                problems.append(f"{here} is not in values.schema.json")
            elif isinstance(value_node, yaml.MappingNode) and not _passthrough(child):
                walk(value_node, child, f"{here}.")
        missing = set(sub.get("properties") or {}) - set(keys) - {"global"}
        problems.extend(f"{path}{k} is in the schema but not in values.yaml" for k in sorted(missing))

    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    walk(root, schema, "")
    assert problems == []


# -- what the chart renders ---------------------------------------------------


def test_default_render_serves_every_namespace_with_the_rules_of_deploy_rbac(tools: Tools) -> None:
    docs = tools.template()
    args = container(docs)["args"]
    assert args[0] == "run" and "--all-namespaces" in args
    assert f"--operator-namespace={RELEASE_NS}" in args
    assert "--metrics-bind-address=0.0.0.0" in args
    assert by_kind(docs, "Role") == []
    operator_role = next(d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "ea-externalauth-operator")
    deploy = next(d for d in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
                  if d and d["kind"] == "ClusterRole")
    # The integration tests run the operator with deploy/rbac.yaml: the chart grants the same.
    assert rule_set(operator_role["rules"]) == rule_set(deploy["rules"])


def test_namespaced_render_grants_no_cluster_wide_secret_permission(tools: Tools) -> None:
    docs = tools.template(NAMESPACED)
    args = container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]
    for role in by_kind(docs, "ClusterRole"):
        assert all(r != "secrets" for _, r, _ in rule_set(role["rules"])), role["metadata"]["name"]
    operator_cluster_role = next(d for d in by_kind(docs, "ClusterRole")
                                 if d["metadata"]["name"] == "ea-externalauth-operator")
    assert {r for _, r, _ in rule_set(operator_cluster_role["rules"])} == {
        "externalauthproviders", "externalauthproviders/status", "namespaces"}  # namespaces: their labels
    roles = {d["metadata"]["namespace"]: rule_set(d["rules"]) for d in by_kind(docs, "Role")}
    assert sorted(roles) == sorted(["team-a", "team-b", RELEASE_NS])
    assert roles[RELEASE_NS] == {("", "secrets", v) for v in ("get", "list", "watch")}
    assert ("", "secrets", "patch") in roles["team-a"] and ("", "events", "create") in roles["team-a"]
    bindings = {d["metadata"]["namespace"] for d in by_kind(docs, "RoleBinding")}
    assert bindings == set(roles)


def test_the_pod_runs_non_root_read_only_without_capabilities_and_with_probes(tools: Tools) -> None:
    docs = tools.template()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert "--liveness-port=8081" in c["args"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize(("values", "flags"), [
    pytest.param({}, ["--log-format=plain"], id="plain logs by default"),
    pytest.param({"operator": {"logFormat": "json"}}, ["--log-format=json"], id="logFormat json passes the flag"),
    pytest.param({"operator": {"logLevel": "debug"}}, ["--debug"], id="logLevel debug passes --debug"),
    pytest.param({"metrics": {"enabled": False}}, ["--metrics-port=0"], id="metrics disabled passes port 0"),
])
def test_values_become_operator_flags(tools: Tools, values: dict[str, Any], flags: list[str]) -> None:
    args = container(tools.template(values))["args"]
    for flag in flags:
        assert flag in args


@pytest.mark.parametrize("values", [
    pytest.param({}, id="the operator accepts the default arguments"),
    pytest.param({**NAMESPACED, "operator": {"logFormat": "json", "logLevel": "debug"}},
                 id="the operator accepts the namespaced arguments with json debug logs"),
])
def test_the_operator_accepts_every_argument_the_chart_passes(
        tools: Tools, values: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from externalauth.cli.main import build_parser

    args = container(tools.template(values))["args"]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"externalauth rejects the chart's arguments {args}:\n{capsys.readouterr().err}")
    assert parsed.command == "run"


def test_user_roles_aggregate_to_edit_and_view_and_providers_are_readable(tools: Tools) -> None:
    roles = {d["metadata"]["name"]: d for d in by_kind(tools.template(), "ClusterRole")}
    edit, view = roles["ea-externalauth-operator-edit"], roles["ea-externalauth-operator-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert ("externalauth.io", "externalauthlinks", "create") in rule_set(edit["rules"])
    assert all(r == "externalauthlinks" for _, r, _ in rule_set(edit["rules"]))  # never the status
    assert rule_set(view["rules"]) == {("externalauth.io", "externalauthlinks", v) for v in ("get", "list", "watch")}
    reader = roles["ea-externalauth-operator-provider-reader"]
    assert {r for _, r, _ in rule_set(reader["rules"])} == {"externalauthproviders"}


# -- image, shards, monitoring, extras (issues 18, 19) -------------------------------


@pytest.mark.parametrize(("values", "image"), [
    pytest.param({}, "ghcr.io/externalauth/externalauth-operator:{v}", id="the default image is the published one"),
    pytest.param({"image": {"repository": "localhost/externalauth-operator"}}, "localhost/externalauth-operator:{v}",
                 id="repository points at a locally built image"),
    pytest.param({"image": {"tag": "dev"}}, "ghcr.io/externalauth/externalauth-operator:dev", id="tag overrides"),
    pytest.param({"image": {"tag": "dev", "digest": "sha256:" + "a" * 64}},
                 "ghcr.io/externalauth/externalauth-operator@sha256:" + "a" * 64, id="a digest wins over the tag"),
])
def test_the_image_is_the_published_one_unless_overridden(tools: Tools, values: dict[str, Any], image: str) -> None:
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container(tools.template(values))["image"] == image.format(v=package)


def test_chart_yaml_says_where_the_project_lives_and_which_kubernetes_it_needs() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    home = "https://github.com/externalauth/externalauth-operator"
    assert chart["home"] == home and home in chart["sources"]
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["maintainers"] and all(m.get("name") for m in chart["maintainers"])
    assert chart["annotations"]["org.opencontainers.image.source"] == home
    assert f"ghcr.io/externalauth/externalauth-operator:{chart['appVersion']}" in chart["annotations"][
        "artifacthub.io/images"]


def test_one_shard_is_one_deployment_without_a_shard_flag(tools: Tools) -> None:
    deployment = one(tools.template(), "Deployment")
    assert deployment["metadata"]["name"] == "ea-externalauth-operator"
    assert [a for a in container([deployment])["args"] if a.startswith("--shard")] == []


def test_n_shards_are_n_deployments_each_serving_its_own_shard(
        tools: Tools, capsys: pytest.CaptureFixture[str]) -> None:
    from externalauth.cli.main import build_parser

    deployments = by_kind(tools.template({"shards": 3, "replicaCount": 2}), "Deployment")
    assert [d["metadata"]["name"] for d in deployments] == [f"ea-externalauth-operator-shard-{i}" for i in range(3)]
    selectors = []
    for i, d in enumerate(deployments):
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [a for a in args if a.startswith("--shard")] == [f"--shard={i}/3"]
        assert d["spec"]["replicas"] == 2
        labels = d["spec"]["template"]["metadata"]["labels"]
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items() and selector["externalauth.io/shard"] == str(i)
        selectors.append(selector)
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"externalauth rejects the shard's arguments {args}:\n{capsys.readouterr().err}")
        assert (parsed.shard.index, parsed.shard.count) == (i, 3)
    # no Deployment selects another shard's pods
    assert len({tuple(sorted(s.items())) for s in selectors}) == 3


def test_shards_on_the_node_network_take_their_own_ports(tools: Tools) -> None:
    values = {"shards": 2, "hostNetwork": True, "metrics": {"port": 9000}, "health": {"port": 9100}}
    ports = [{p["name"]: p["containerPort"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
             for d in by_kind(tools.template(values), "Deployment")]
    assert ports == [{"metrics": 9000, "health": 9100}, {"metrics": 9001, "health": 9101}]
    pod_network = [d["spec"]["template"]["spec"]["containers"][0]["ports"]
                   for d in by_kind(tools.template({"shards": 2}), "Deployment")]
    assert pod_network[0] == pod_network[1]


@pytest.mark.parametrize(("apis", "kinds"), [
    pytest.param((), set(), id="without prometheus-operator's API neither monitor is rendered"),
    pytest.param(MONITORING, {"ServiceMonitor", "PrometheusRule"}, id="with its API both are rendered"),
])
def test_monitors_are_rendered_only_where_their_api_exists(tools: Tools, apis: tuple[str, ...],
                                                           kinds: set[str]) -> None:
    docs = tools.template(EVERYTHING_ON, apis=apis)
    assert {d["kind"] for d in docs} & {"ServiceMonitor", "PrometheusRule"} == kinds


def test_proxy_extra_volumes_and_extra_objects_are_rendered(tools: Tools) -> None:
    docs = tools.template({**EVERY_NEW_VALUE, "shards": 1,
                           "operator": {"extraEnv": [{"name": "EXTRA", "value": "1"}]}})
    c = container(docs)
    assert c["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"},
                        {"name": "NO_PROXY", "value": ".svc,.cluster.local"}, {"name": "EXTRA", "value": "1"}]
    assert c["volumeMounts"][-1] == {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][-1] == {"name": "corp-ca", "configMap": {"name": "corp-ca"}}
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    assert {"corp-ca", "ea-extra"} <= names
    assert "env" not in container(tools.template())


def test_metrics_are_open_only_to_the_monitoring_namespace_and_egress_only_when_asked(tools: Tools) -> None:
    policy = one(tools.template(), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
    policy = one(tools.template(EVERY_NEW_VALUE), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ports = [sorted((p["protocol"], p["port"]) for p in rule["ports"]) for rule in policy["egress"]]
    assert ports == [[("TCP", 53), ("UDP", 53)], [("TCP", 6443)], [("TCP", 443)]]
    assert policy["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert "to" not in policy["egress"][2]  # providers: anywhere on 443


def test_the_admission_policy_binds_the_operator_service_account(tools: Tools) -> None:
    docs = tools.template()
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (condition,) = policy["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{RELEASE_NS}:ea-externalauth-operator'" in condition["expression"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    vap = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert {d["kind"] for d in tools.template({"admissionPolicy": {"enabled": False}})} & vap == set()



# -- alerts and dashboard ------------------------------------------------------


def _rules(tools: Tools) -> dict[str, Any]:
    rule: dict[str, Any] = one(tools.template({"prometheusRule": {"enabled": True}}, apis=MONITORING),
                               "PrometheusRule")["spec"]
    return rule


def test_alert_rules_pass_promtool_check_and_unit_tests(tools: Tools, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rules(tools)))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yaml")
    check = tools.promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout
    test = tools.promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_has_a_unit_test_in_which_it_fires(tools: Tools) -> None:
    alerts = {r["alert"] for g in _rules(tools)["groups"] for r in g["rules"]}
    assert alerts == {"ExternalAuthLinkNotReady", "ExternalAuthRefreshFailing",
                      "ExternalAuthRefreshTokenExpiringSoon", "ExternalAuthProviderCredentialsRejected",
                      "ExternalAuthTokensLost"}
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert firing == alerts


def test_alerts_can_be_switched_off_one_by_one(tools: Tools) -> None:
    off = {"prometheusRule": {"enabled": True, "alerts": {"tokensLost": {"enabled": False, "for": "0m",
                                                                         "severity": "critical"}}}}
    rule = one(tools.template(off, apis=MONITORING), "PrometheusRule")
    assert "ExternalAuthTokensLost" not in {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def _metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bexternalauth_[a-z_]+", expr)}


def test_alerts_and_the_dashboard_use_only_contract_metrics(tools: Tools) -> None:
    docs = tools.template(EVERYTHING_ON, apis=MONITORING)
    exprs = [r["expr"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(next(iter(one(docs, "ConfigMap")["data"].values())))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used <= CONTRACT_METRICS, used - CONTRACT_METRICS
    assert used == CONTRACT_METRICS, f"no panel or alert for {CONTRACT_METRICS - used}"


# -- against the real API server ----------------------------------------------


def _apply_dry_run(kubectl: Callable[..., Any], docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    res: subprocess.CompletedProcess[str] = kubectl("apply", "--dry-run=server", "-f", "-",
                                                    input=yaml.safe_dump_all(docs), check=False)
    return res


@pytest.mark.parametrize("values", [
    pytest.param({}, id="the default render is accepted by the API server"),
    pytest.param(NAMESPACED, id="the namespaced render is accepted by the API server"),
    pytest.param(EVERY_NEW_VALUE, id="shards, proxy, extras and default egress are accepted by the API server"),
])
def test_rendered_manifests_pass_a_server_side_dry_run(
        tools: Tools, kubectl: Callable[..., Any], values: dict[str, Any]) -> None:
    for ns in (RELEASE_NS, *values.get("watchNamespaces", [])):
        kubectl("create", "namespace", ns, check=False)
    docs = tools.template({**values, "grafanaDashboard": {"enabled": True}})
    res = _apply_dry_run(kubectl, docs)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(server dry run)") == len(docs)


@pytest.fixture(scope="module")
def bare_cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """A second, empty API server (no CRDs): a cluster the chart is installed into first."""
    cp = ControlPlane(binaries=control_plane.binaries, crds_dir=None)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def _exists(cp: ControlPlane, *args: str) -> bool:
    return cp.kubectl("get", *args, "-o", "name", check=False).returncode == 0


def _can(cp: ControlPlane, verb: str, resource: str, *, as_: str, namespace: str | None = None,
         groups: tuple[str, ...] = ()) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={as_}", *[f"--as-group={g}" for g in groups]]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else []
    res = cp.kubectl(*args, check=False)
    assert res.stdout.strip() in ("yes", "no"), res.stderr
    return res.stdout.strip() == "yes"


def test_helm_install_upgrade_uninstall_keeps_the_crds(tools: Tools, bare_cluster: ControlPlane) -> None:
    """docs/install.md, step by step, on an API server that has never seen the CRDs."""
    cp = bare_cluster
    kc = ["--kubeconfig", str(cp.kubeconfig)]
    sa = f"system:serviceaccount:{RELEASE_NS}:externalauth-operator"
    assert not _exists(cp, "crd", "externalauthlinks.externalauth.io")

    # install (cluster-wide)
    tools.helm("install", "externalauth-operator", str(CHART), *kc, "--namespace", RELEASE_NS,
               "--create-namespace")
    assert _exists(cp, "crd", "externalauthlinks.externalauth.io")
    assert _exists(cp, "deployment", "externalauth-operator", "-n", RELEASE_NS)
    cp.kubectl("wait", "--for=condition=Established", "crd/externalauthlinks.externalauth.io", "--timeout=60s")
    assert _can(cp, "patch", "secrets", as_=sa, namespace="anywhere")
    # a link that must survive the uninstall
    cp.kubectl("create", "namespace", "team-a")
    cp.kubectl("create", "namespace", "team-b")
    link = {"apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
            "metadata": {"name": "github", "namespace": "team-a"},
            "spec": {"providerName": "github", "secretName": "github-token"}}
    wait_for(lambda: cp.kubectl("apply", "-f", "-", input=json.dumps(link), check=False).returncode == 0,
             timeout=30, message="the ExternalAuthLink kind to be served")

    # upgrade to the namespaced mode: the cluster-wide Secret permission goes away
    tools.helm("upgrade", "externalauth-operator", str(CHART), *kc, "--namespace", RELEASE_NS,
               "--set", "watchNamespaces={team-a}", "--set", "replicaCount=2")
    deployment = json.loads(cp.kubectl("get", "deployment", "externalauth-operator", "-n", RELEASE_NS,
                                       "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    assert "--namespace=team-a" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _can(cp, "patch", "secrets", as_=sa, namespace="team-a")
    assert not _can(cp, "get", "secrets", as_=sa, namespace="team-b")
    assert _can(cp, "get", "secrets", as_=sa, namespace=RELEASE_NS)
    assert not _can(cp, "patch", "secrets", as_=sa, namespace=RELEASE_NS)
    assert _can(cp, "list", "externalauthproviders", as_=sa)

    # users: edit in a namespace (through the aggregated role) may sign in; anyone reads providers
    cp.kubectl("create", "rolebinding", "alice-edit", "-n", "team-a",
               "--clusterrole=externalauth-operator-edit", "--user=alice")
    assert _can(cp, "create", "externalauthlinks", as_="alice", namespace="team-a")
    assert not _can(cp, "patch", "externalauthlinks/status", as_="alice", namespace="team-a")
    assert not _can(cp, "create", "externalauthlinks", as_="alice", namespace="team-b")
    assert _can(cp, "get", "externalauthproviders", as_="bob", groups=("system:authenticated",))

    # uninstall: the release's objects go, the CRDs and the links stay
    tools.helm("uninstall", "externalauth-operator", *kc, "--namespace", RELEASE_NS)
    wait_for(lambda: not _exists(cp, "deployment", "externalauth-operator", "-n", RELEASE_NS),
             timeout=30, message="the Deployment to be deleted")
    assert not _exists(cp, "clusterrole", "externalauth-operator")
    assert not _exists(cp, "role", "externalauth-operator", "-n", "team-a")
    assert _exists(cp, "crd", "externalauthlinks.externalauth.io")
    assert _exists(cp, "crd", "externalauthproviders.externalauth.io")
    assert _exists(cp, "externalauthlink", "github", "-n", "team-a")

    # Another release (or a chart install over CRDs applied with kubectl) must be handed
    # the CRDs first: docs/install.md, "Moving CRDs to the chart".
    res = tools.helm("install", "eao", str(CHART), *kc, "--namespace", RELEASE_NS, check=False)
    assert res.returncode != 0 and "invalid ownership metadata" in res.stderr, res.stderr
    for crd in CRD_NAMES:
        cp.kubectl("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        cp.kubectl("annotate", "crd", crd, "meta.helm.sh/release-name=eao",
                   f"meta.helm.sh/release-namespace={RELEASE_NS}", "--overwrite")
    tools.helm("install", "eao", str(CHART), *kc, "--namespace", RELEASE_NS)
    assert _exists(cp, "deployment", "eao-externalauth-operator", "-n", RELEASE_NS)
    assert _exists(cp, "externalauthlink", "github", "-n", "team-a")
    tools.helm("uninstall", "eao", *kc, "--namespace", RELEASE_NS)


# -- the operator under the chart's namespaced RBAC ---------------------------------------


def test_the_operator_serves_its_namespace_under_the_namespaced_rbac_and_nothing_else(
        tools: Tools, control_plane: ControlPlane, world: Any, tmp_path: Path) -> None:
    """Contract §9.9: with watchNamespaces the operator holds no cluster-wide Secret
    permission. Run as a user bound to exactly the chart's namespaced Roles, it refreshes
    a link in its namespace and is denied Secrets in a namespace it does not serve."""

    release, user = f"nsop-{world.ns[-6:]}", f"namespaced-operator-{world.ns[-6:]}"
    other = f"{world.ns}-other"[:63]
    control_plane.kubectl("create", "namespace", other)
    docs = tools.template({"watchNamespaces": [world.ns], "crds": {"enabled": False}}, release=release,
                          namespace=world.ns)
    rbac = []
    for doc in docs:
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding") and any(
                s.get("kind") == "ServiceAccount" for s in doc.get("subjects", [])):
            doc["subjects"] = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
            rbac.append(doc)
        elif doc["kind"] in ("ClusterRole", "Role") and release in doc["metadata"]["name"] \
                and "aggregate" not in json.dumps(doc["metadata"].get("labels", {})):
            rbac.append(doc)
    cluster_rules = [r for d in rbac if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert [] == [r for r in cluster_rules if "secrets" in r.get("resources", [])]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    kubeconfig = control_plane.mint_user(user)

    _refresh_once_as(kubeconfig, world, tmp_path, under="the namespaced RBAC")
    denied = [control_plane.kubectl("auth", "can-i", verb, "secrets", "-n", other, kubeconfig=kubeconfig,
                                    check=False).stdout.strip() for verb in ("get", "list", "watch", "patch")]
    assert ["no"] * 4 == denied
    assert "no" == control_plane.kubectl("auth", "can-i", "list", "secrets", "--all-namespaces",
                                         kubeconfig=kubeconfig, check=False).stdout.strip()


# -- the admission policy on the real API server ------------------------------------------


def _service_account_kubeconfig(cp: ControlPlane, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount itself (a TokenRequest token)."""
    token = cp.kubectl("create", "token", name, "-n", namespace, "--duration=3600s").stdout.strip()
    admin = yaml.safe_load(Path(cp.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
        "current-context": name}))
    path.chmod(0o600)
    return path


def test_the_admission_policy_lets_the_operator_refresh_and_refuses_its_account_anything_else(
        tools: Tools, control_plane: ControlPlane, world: Any, tmp_path: Path) -> None:
    """Issue 18: the chart's ValidatingAdmissionPolicy, installed on the real API server.
    The operator, run as the chart's ServiceAccount (a real token) under the chart's
    RBAC, refreshes a link; the same account is refused a change to another data key,
    another annotation or the label of that Secret, and any change to an unlabelled
    Secret it may patch by RBAC. The cluster admin is not affected."""

    release = f"vap-{world.ns[-6:]}"
    sa = f"{release}-externalauth-operator"
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
             "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    docs = [d for d in tools.template({"watchNamespaces": [world.ns], "crds": {"enabled": False}},
                                      release=release, namespace=world.ns) if d["kind"] in kinds]
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= {d["kind"] for d in docs}
    manifest = yaml.safe_dump_all(docs)
    control_plane.kubectl("apply", "-f", "-", input=manifest)
    try:
        kubeconfig = _service_account_kubeconfig(control_plane, world.ns, sa, tmp_path / "sa.kubeconfig")
        for name in ("probe", "plain"):
            world.core.create_namespaced_secret(world.ns, {
                "metadata": {"name": name}, "data": {"access_token": b64("not the operator's")}})

        def patch(name: str, body: dict[str, Any], *, as_admin: bool = False) -> subprocess.CompletedProcess[str]:
            res: subprocess.CompletedProcess[str] = control_plane.kubectl(
                "patch", "secret", name, "-n", world.ns, "--type=merge", "-p", json.dumps(body),
                kubeconfig=None if as_admin else kubeconfig, check=False)
            return res

        # The policy takes effect when the API server has loaded it: wait for the first refusal.
        wait_for(lambda: "denied request" in patch("probe", {"data": {"access_token": b64("probe")}}).stderr,
                 timeout=60, message="the admission policy to refuse the unlabelled Secret")

        logs = _refresh_once_as(kubeconfig, world, tmp_path, under="the admission policy")
        assert "denied request" not in logs

        refused = {
            "another data key": patch("tok", {"data": {"password": b64("x")}}),
            "another annotation": patch("tok", {"metadata": {"annotations": {"example.com/owner": "mallory"}}}),
            "the opt-in label": patch("tok", {"metadata": {"labels": {"externalauth.io/provider": None}}}),
            "an unlabelled Secret": patch("plain", {"data": {"access_token": b64("x")}}),
        }
        for what, res in refused.items():
            assert res.returncode != 0 and "denied request" in res.stderr, f"{what}: {res.stdout}{res.stderr}"
        assert "password" in refused["another data key"].stderr
        assert world.secret_data("plain")["access_token"] == "not the operator's"
        assert "password" not in world.secret_data("tok")
        # what the operator does is allowed to the account, and the admin is not bound by it
        assert patch("tok", {"data": {"scope": b64("repo")},
                             "metadata": {"annotations": {"externalauth.io/note": "x"}}}).returncode == 0
        assert patch("plain", {"data": {"password": b64("x")}}, as_admin=True).returncode == 0
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


def _refresh_once_as(kubeconfig: Any, world: Any, tmp_path: Path, *, under: str) -> str:
    """A provider, a due token Secret and its link; the operator run with ``kubeconfig``
    until the token is refreshed and the link Ready. Returns the operator's log."""
    from tests.harness.operator_fixtures import OperatorProcess

    world.make_provider()
    before = world.make_token_secret("tok", expires_in=300)
    world.make_link("link", secret="tok")
    op = OperatorProcess(kubeconfig=str(kubeconfig), namespaces=[world.ns], log_path=tmp_path / "op.log")
    try:
        op.start()
        wait_for(lambda: world.secret_data("tok")["refresh_token"] != before["refresh_token"], timeout=60,
                 message=lambda: f"the refresh under {under}; log:\n{op.logs()[-3000:]}")
        world.wait_condition("link", "Ready", "True")
    finally:
        op.stop()
    return op.logs()
