"""The harness is a real control plane: it enforces what a mock would not.

Each test proves one promise the operator relies on (§9 of the API spec):
optimistic concurrency (409 on a stale ``resourceVersion``), the CRD schema
(422 for bad objects), and RBAC (403 until a binding grants access).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import ControlPlane

GROUP, VERSION = "externalauth.io", "v1alpha1"


def _status_of(call: Callable[[], Any]) -> int:
    """HTTP status of a kubernetes-client call (200 when it does not raise)."""
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def _secret(core_v1: Any, namespace: str) -> tuple[str, str]:
    """Create a Secret and update it once; return (name, the stale first resourceVersion)."""
    name = f"token-{secrets.token_hex(3)}"
    created = core_v1.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"k": "v1"}),
    )
    stale = created.metadata.resource_version
    core_v1.patch_namespaced_secret(name, namespace, {"stringData": {"k": "v2"}})
    return name, stale


# -- (a) compare-and-swap ----------------------------------------------------


def _replace_with(core_v1: Any, namespace: str, name: str, rv: str) -> None:
    body = core_v1.read_namespaced_secret(name, namespace)
    body.metadata.resource_version = rv
    body.string_data = {"k": "stale writer"}
    core_v1.replace_namespaced_secret(name, namespace, body)


def _patch_with(core_v1: Any, namespace: str, name: str, rv: str) -> None:
    core_v1.patch_namespaced_secret(
        name,
        namespace,
        {"metadata": {"resourceVersion": rv}, "stringData": {"k": "stale writer"}},
    )


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(_replace_with, id="a replace based on a stale resourceVersion conflicts"),
        pytest.param(_patch_with, id="a patch carrying a stale resourceVersion conflicts"),
    ],
)
def test_stale_resource_version_gets_409(core_v1: Any, namespace: str, write: Any) -> None:
    """A write based on an outdated resourceVersion is refused with 409 Conflict."""
    name, stale = _secret(core_v1, namespace)

    status = _status_of(lambda: write(core_v1, namespace, name, stale))

    assert 409 == status


def test_stale_write_leaves_the_stored_value(core_v1: Any, namespace: str) -> None:
    """The refused stale write changes nothing: the newer value stays."""
    name, stale = _secret(core_v1, namespace)
    _status_of(lambda: _patch_with(core_v1, namespace, name, stale))

    stored = core_v1.read_namespaced_secret(name, namespace)

    assert "djI=" == stored.data["k"]  # base64("v2")


# -- (b) CRD schema ----------------------------------------------------------


def _link(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ExternalAuthLink",
        "metadata": {"name": name},
        "spec": spec,
    }


def _provider(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ExternalAuthProvider",
        "metadata": {"name": name},
        "spec": spec,
    }


VALID_LINK = {"providerName": "github", "secretName": "gh-token"}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"providerName": "github"}, id="a link without secretName is rejected"),
        pytest.param(
            {**VALID_LINK, "refreshBefore": "soon"},
            id="a link whose refreshBefore is not a duration is rejected",
        ),
        pytest.param(
            {**VALID_LINK, "outputFormats": ["git-credentials", "kubeconfig"]},
            id="a link asking for an unknown output format is rejected",
        ),
        pytest.param(
            {**VALID_LINK, "secretName": "Not_A_Name"},
            id="a link whose secretName is not a DNS name is rejected",
        ),
    ],
)
def test_invalid_link_gets_422(custom_objects: Any, namespace: str, spec: dict[str, Any]) -> None:
    """The CRD's OpenAPI schema rejects a malformed ExternalAuthLink with 422."""
    status = _status_of(
        lambda: custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "externalauthlinks", _link("bad", **spec)
        )
    )

    assert 422 == status


def test_valid_link_is_accepted_with_defaults(custom_objects: Any, namespace: str) -> None:
    """A valid ExternalAuthLink is stored, with the schema's defaults filled in."""
    created = custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "externalauthlinks", _link("good", **VALID_LINK)
    )

    assert {**VALID_LINK, "refreshBefore": "15m", "validate": True, "suspend": False, "revokeOnDelete": False} == (
        created["spec"]
    )


@pytest.fixture
def provider_name(custom_objects: Any) -> Iterator[str]:
    """A unique ExternalAuthProvider name, deleted after the test if it was created."""
    name = f"p-{secrets.token_hex(4)}"
    yield name
    try:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "externalauthproviders", name)
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            {"type": "generic", "clientID": "c", "tokenURL": "http://idp.example/token"},
            id="a provider whose tokenURL is plain http is rejected",
        ),
        pytest.param(
            {"type": "generic", "clientID": "c"},
            id="a generic provider without tokenURL is rejected",
        ),
        pytest.param(
            {"type": "github", "clientID": "c", "baseURL": "http://ghe.example"},
            id="a provider whose baseURL is plain http is rejected",
        ),
    ],
)
def test_invalid_provider_gets_422(
    custom_objects: Any, provider_name: str, spec: dict[str, Any]
) -> None:
    """The CRD's schema and CEL rules reject an insecure or incomplete provider with 422."""
    status = _status_of(
        lambda: custom_objects.create_cluster_custom_object(
            GROUP, VERSION, "externalauthproviders", _provider(provider_name, **spec)
        )
    )

    assert 422 == status


def test_valid_provider_is_accepted(custom_objects: Any, provider_name: str) -> None:
    """An https provider passes the schema and CEL rules."""
    spec = {"type": "generic", "clientID": "c", "tokenURL": "https://idp.example/token"}

    status = _status_of(
        lambda: custom_objects.create_cluster_custom_object(
            GROUP, VERSION, "externalauthproviders", _provider(provider_name, **spec)
        )
    )

    assert 200 == status


# -- (c) RBAC ----------------------------------------------------------------


@pytest.fixture
def user(control_plane: ControlPlane) -> tuple[str, Path]:
    """A fresh user (client certificate) with no RBAC at all."""
    name = f"user-{secrets.token_hex(3)}"
    return name, control_plane.mint_user(name, groups=["externalauth:testers"])


def _list_secrets_as(kubeconfig: Path, namespace: str) -> int:
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        return _status_of(lambda: client.CoreV1Api(api).list_namespaced_secret(namespace))
    finally:
        api.close()


def test_user_without_rbac_is_forbidden(namespace: str, user: tuple[str, Path]) -> None:
    """An authenticated user with no RoleBinding gets 403 listing Secrets."""
    _, kubeconfig = user

    assert 403 == _list_secrets_as(kubeconfig, namespace)


def test_rolebinding_grants_access(k8s_api: Any, namespace: str, user: tuple[str, Path]) -> None:
    """After a RoleBinding grants list on Secrets, the same user gets 200."""
    name, kubeconfig = user
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="User", name=name, api_group="rbac.authorization.k8s.io")
            ],
        ),
    )

    deadline = time.monotonic() + 10  # the authorizer's informer sees the binding shortly
    status = _list_secrets_as(kubeconfig, namespace)
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _list_secrets_as(kubeconfig, namespace)

    assert 200 == status


# -- the harness itself -----------------------------------------------------


def test_kubectl_sees_the_crds(kubectl: Callable[..., Any]) -> None:
    """The built kubectl talks to the control plane and discovers the CRDs."""
    out = kubectl("api-resources", "--api-group=externalauth.io", "-o", "name").stdout

    assert ["externalauthlinks.externalauth.io", "externalauthproviders.externalauth.io"] == sorted(
        out.split()
    )


def test_data_survives_an_apiserver_restart(
    control_plane: ControlPlane, core_v1: Any, namespace: str
) -> None:
    """restart_apiserver() keeps the port and etcd data: objects written before are still there."""
    core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before"), data={"k": "v"}),
    )

    control_plane.restart_apiserver()

    assert {"k": "v"} == core_v1.read_namespaced_config_map("before", namespace).data
