"""The CLI's calls to the API server (over :class:`~externalauth.kube.connecting.Connection`). I/O.

Raw dicts in, raw dicts out; every failure becomes an :class:`ExternalAuthError`
whose message is one safe line (no Secret data, no response body beyond the API
server's own Status message).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import urllib3

from externalauth import GROUP, VERSION
from externalauth.cli import exits, namespaces
from externalauth.cli.formatting import printable
from externalauth.cli.kubeflags import DEFAULT_REQUEST_TIMEOUT, KubeFlags
from externalauth.errors import NotFoundError, PermanentError
from externalauth.kube import api, translating
from externalauth.kube.connecting import Connection, Response, connect

API = f"{GROUP}/{VERSION}"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON = {"Content-Type": "application/json"}
LINK_KIND = "ExternalAuthLink"


def _impersonation(flags: KubeFlags) -> list[tuple[str, str]]:
    """The impersonation headers for ``--as`` / ``--as-group`` (what kubectl sends)."""
    if not flags.as_user:
        return []
    return [("Impersonate-User", flags.as_user), *(("Impersonate-Group", g) for g in flags.as_groups)]


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


class Cluster:
    """A few typed calls, shaped for the CLI commands."""

    def __init__(self, client: Connection, *, impersonate: Sequence[tuple[str, str]] = ()) -> None:
        self.client = client
        self._identity = tuple(impersonate)  # (header, value) pairs, a header possibly repeated

    @classmethod
    def open(cls, flags: KubeFlags, *, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Cluster:
        """A client as the flags say (``timeout``: per request, unless ``--request-timeout``)."""
        if flags.kubeconfig and not os.path.isfile(flags.kubeconfig):
            raise PermanentError(f"kubeconfig file {flags.kubeconfig} does not exist")
        if flags.as_groups and not flags.as_user:
            raise exits.CommandError("--as-group needs --as (a user to act as)", code=exits.ExitCode.USAGE)
        limit = flags.timeout(timeout)
        client = connect(kubeconfig=flags.kubeconfig, context=flags.context, pool_size=4,
                         timeout=cast(float, limit))  # None (no limit) is urllib3's own "no timeout"
        return cls(client, impersonate=_impersonation(flags))

    @property
    def default_namespace(self) -> str:
        return self.client.namespace

    @property
    def context_namespace(self) -> str | None:
        """The ``namespace`` the kubeconfig context names, if it names one."""
        selection = self.client.config.selection
        return selection.namespace if selection.namespace_set else None

    def namespace(self, explicit: str | None) -> str:
        """``-n``, else the context's namespace, else (in a pod) the pod's, else ``default``."""
        return namespaces.choose(explicit=explicit, context=self.context_namespace,
                                 pod=namespaces.read_pod_namespace())

    def _send(self, method: str, what: str, *, headers: Mapping[str, str] | None = None,
              **kwargs: Any) -> Response:
        sent = urllib3.HTTPHeaderDict(headers or {})
        for key, value in self._identity:
            sent.add(key, value)
        return api.send(self.client, method, what=what, headers=sent, **kwargs)

    def _call(self, method: str, what: str, **kwargs: Any) -> dict[str, Any]:
        resp = self._send(method, what, **kwargs)
        return translating.json_object(resp, what=what)

    # --- providers ---------------------------------------------------------------
    def get_provider(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"ExternalAuthProvider {name}", version=API,
                          url=f"externalauthproviders/{name}")

    def list_names(self, plural: str) -> list[str]:
        """Names of a cluster-wide kind (``externalauthproviders``, ``namespaces``), sorted."""
        version = "v1" if plural == "namespaces" else API
        body = self._call("GET", f"listing {plural}", version=version, url=plural)
        return sorted(str((i.get("metadata") or {}).get("name") or "") for i in body.get("items") or []
                      if isinstance(i, dict))

    # --- links -------------------------------------------------------------------
    def get_link(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url=f"externalauthlinks/{name}")

    def list_links(self, namespace: str | None, *, name: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The links (one, with ``name``: a list request, so that watch-only RBAC serves it)
        and the list's resourceVersion, to watch from."""
        where = f"namespace {namespace}" if namespace else "all namespaces"
        params = {"fieldSelector": f"metadata.name={name}"} if name else {}
        body = self._call("GET", f"listing ExternalAuthLinks in {where}", version=API,
                          namespace=namespace, url="externalauthlinks", params=params)
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch_links(self, namespace: str | None, *, name: str | None, resource_version: str,
                    seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, link) events after ``resource_version``, for at most ``seconds`` (the API
        server ends the watch then). Bookmarks are not yielded. :class:`WatchExpired` on 410."""
        where = f"{namespace}/{name}" if namespace and name else f"in {namespace or 'all namespaces'}"
        selector = f"metadata.name={name}" if name else None
        yield from self._watch(f"watching ExternalAuthLink {where}", version=API, namespace=namespace,
                               url="externalauthlinks", selector=selector, resource_version=resource_version,
                               seconds=seconds)

    def watch_events(self, namespace: str, *, selector: str, resource_version: str,
                     seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, event) for the core/v1 events in ``namespace`` that match the field ``selector``."""
        yield from self._watch(f"watching the events in {namespace}", version="v1", namespace=namespace,
                               url="events", selector=selector, resource_version=resource_version,
                               seconds=seconds)

    def _watch(self, what: str, *, version: str, namespace: str | None, url: str, selector: str | None,
               resource_version: str, seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(max(1, seconds))}
        if selector:
            params["fieldSelector"] = selector
        resp = self._send("GET", what, version=version, namespace=namespace, url=url, params=params,
                          stream=True, timeout=(10, max(1, seconds) + 30))
        with contextlib.closing(resp):
            if resp.status_code == 410:
                raise WatchExpired()
            if resp.status_code != 200:
                translating.json_object(resp, what=what)  # raises the translated error
            for line in resp.iter_lines():
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise PermanentError(f"{what}: the API server sent something that is not JSON") from None
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    said = printable(str(obj.get("message") or ""))[:200]
                    raise PermanentError(f"{what}: the watch ended with an error {obj.get('code')}: {said}")
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                    yield kind, obj

    def create_link(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", f"creating ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url="externalauthlinks",
                          data=json.dumps(body), headers=JSON)

    def patch_link(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"updating ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url=f"externalauthlinks/{name}",
                          data=json.dumps(patch), headers=MERGE)

    def delete_link(self, namespace: str, name: str, *, uid: str | None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call("DELETE", f"deleting ExternalAuthLink {namespace}/{name}", version=API, namespace=namespace,
                   url=f"externalauthlinks/{name}", data=json.dumps(body), headers=JSON)

    def list_events(self, namespace: str, *, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The core/v1 events matching the field ``selector``, and the list's resourceVersion."""
        body = self._call("GET", f"listing the events in {namespace}", namespace=namespace, url="events",
                          params={"fieldSelector": selector})
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    def link_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The events about one link, oldest first."""
        selector = f"involvedObject.kind={LINK_KIND},involvedObject.name={name}"
        body = self._call("GET", f"listing the events of ExternalAuthLink {namespace}/{name}",
                          namespace=namespace, url="events", params={"fieldSelector": selector})
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

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
