"""The CLI's calls to the API server (over :class:`~externalauth.kube.connecting.Connection`). I/O.

Raw dicts in, raw dicts out; every failure becomes an :class:`ExternalAuthError`
whose message is one safe line (no Secret data, no response body beyond the API
server's own Status message).
"""

from __future__ import annotations

import json
import os
from typing import Any

from externalauth import GROUP, VERSION
from externalauth.errors import NotFoundError, PermanentError
from externalauth.kube import requesting, translating
from externalauth.kube.connecting import Connection, connect

API = f"{GROUP}/{VERSION}"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON = {"Content-Type": "application/json"}


class Cluster:
    """A few typed calls, shaped for the CLI commands."""

    def __init__(self, client: Connection) -> None:
        self.client = client

    @classmethod
    def open(cls, *, kubeconfig: str | None, context: str | None) -> Cluster:
        if kubeconfig and not os.path.isfile(kubeconfig):
            raise PermanentError(f"kubeconfig file {kubeconfig} does not exist")
        return cls(connect(kubeconfig=kubeconfig, context=context, pool_size=4, timeout=15.0))

    @property
    def default_namespace(self) -> str:
        return self.client.namespace

    def _call(self, method: str, what: str, **kwargs: Any) -> dict[str, Any]:
        resp = requesting.send(self.client, method, what=what, **kwargs)
        return translating.json_object(resp, what=what)

    # --- providers ---------------------------------------------------------------
    def get_provider(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"ExternalAuthProvider {name}", version=API,
                          url=f"externalauthproviders/{name}")

    # --- links -------------------------------------------------------------------
    def get_link(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url=f"externalauthlinks/{name}")

    def list_links(self, namespace: str | None) -> list[dict[str, Any]]:
        where = f"namespace {namespace}" if namespace else "all namespaces"
        body = self._call("GET", f"listing ExternalAuthLinks in {where}", version=API,
                          namespace=namespace, url="externalauthlinks")
        return [i for i in body.get("items") or [] if isinstance(i, dict)]

    def create_link(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", f"creating ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url="externalauthlinks",
                          data=json.dumps(body), headers=JSON)

    def patch_link(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"updating ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url=f"externalauthlinks/{name}",
                          data=json.dumps(patch), headers=MERGE)

    # --- secrets -----------------------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"reading Secret {namespace}/{name}",
                              namespace=namespace, url=f"secrets/{name}")
        except NotFoundError:
            return None

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", f"creating Secret {namespace}/{name}", namespace=namespace,
                          url="secrets", data=json.dumps(body), headers=JSON)

    def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch; put ``metadata.resourceVersion`` in it for a compare-and-swap."""
        return self._call("PATCH", f"writing Secret {namespace}/{name}", namespace=namespace,
                          url=f"secrets/{name}", data=json.dumps(patch), headers=MERGE)

    def delete_secret(self, namespace: str, name: str, *, uid: str | None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call("DELETE", f"deleting Secret {namespace}/{name}", namespace=namespace,
                   url=f"secrets/{name}", data=json.dumps(body), headers=JSON)
