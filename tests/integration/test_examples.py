"""The manifests in ``examples/`` work as documented: applied with the real kubectl (only the
values that must point at the simulator substituted), the link becomes Ready and the
workspace mounts exactly the key the operator writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.harness.world import World

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPERATOR_NS = "externalauth-system"
PROVIDER = "github"  # the name examples/provider-github-app.yaml gives it


def text(name: str) -> str:
    return (EXAMPLES / name).read_text()


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text(name)) if d]


@pytest.fixture
def operator_namespace(kubectl: Callable[..., Any]) -> str:
    kubectl("create", "namespace", OPERATOR_NS, check=False)
    return OPERATOR_NS


@pytest.fixture
def example_provider(kubectl: Callable[..., Any], world: World, operator_namespace: str) -> Iterator[str]:
    """examples/provider-github-app.yaml, with the simulator's client credentials, then
    patched to point at the simulator (URL, validation URL, its CA)."""
    manifest = (text("provider-github-app.yaml")
                .replace("Iv1.0123456789abcdef", CLIENT_ID)
                .replace("REPLACE_WITH_THE_GITHUB_APP_CLIENT_SECRET", CLIENT_SECRET))
    kubectl("apply", "-f", "-", input=manifest)
    patch = {"spec": {"baseURL": world.sim.url, "validateURL": f"{world.sim.url}/user",
                      "caBundle": world.sim.ca_pem}}
    kubectl("patch", "externalauthprovider", PROVIDER, "--type", "merge", "-p", json.dumps(patch))
    yield PROVIDER
    kubectl("delete", "externalauthprovider", PROVIDER, "--ignore-not-found", check=False)


def test_every_example_is_valid_against_the_crds_and_the_api(
        kubectl: Callable[..., Any], namespace: str, operator_namespace: str) -> None:
    """Server-side dry run of every file: CRD schemas and CEL rules accept them as written."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        own = any((d.get("metadata") or {}).get("namespace") for d in docs(path.name))
        scope = [] if own else ["-n", namespace]
        r = kubectl("apply", "--dry-run=server", *scope, "-f", str(path), check=False)
        assert (path.name, 0) == (path.name, r.returncode), r.stderr


def test_the_examples_make_a_ready_link_and_the_workspace_mounts_its_key(
        kubectl: Callable[..., Any], world: World, namespace: str, make_operator: Any,
        example_provider: str) -> None:
    """provider → token Secret → link: Ready; the git-credentials key the pods mount is there."""
    # The example keeps the client secret where an installed operator runs.
    operator = make_operator(namespaces=[namespace], extra_args=("--operator-namespace", OPERATOR_NS))
    grant = world.sim.issue_grant(CLIENT_ID, login="erin")
    secret = (text("token-secret.yaml")
              .replace("REPLACE_WITH_ACCESS_TOKEN", grant.access_token)
              .replace("REPLACE_WITH_REFRESH_TOKEN", grant.refresh_token))
    kubectl("apply", "-n", namespace, "-f", "-", input=secret)
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "link.yaml"))

    r = kubectl("wait", "-n", namespace, "--for=condition=Ready", "externalauthlink/github",
                "--timeout=60s", check=False, timeout=90)
    assert 0 == r.returncode, r.stderr + operator.logs()[-3000:]

    data = world.secret_data("github-token")
    host = world.sim.url.removeprefix("https://")
    assert f"https://x-access-token:{data['access_token']}@{host}" in data["git-credentials"].splitlines()

    for name in ("workspace-pod.yaml", "workspace-deployment.yaml"):
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / name))
        [obj] = docs(name)
        pod = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
        [volume] = [v for v in pod["volumes"] if "secret" in v]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        mounted = [i["key"] for i in volume["secret"]["items"]]
        assert ("github-token", ["git-credentials"]) == (volume["secret"]["secretName"], mounted)
        assert set(mounted) <= set(data)
        assert "store --file=/var/run/externalauth/git-credentials" == env["GIT_CONFIG_VALUE_0"]
