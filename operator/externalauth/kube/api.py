"""The one API client, for the operator, its watches, its preflight and the CLI. I/O;
synchronous (the operator runs it in a thread pool).

Raw dicts in, raw dicts out. Every call goes through :func:`send` and
:mod:`~externalauth.kube.translating`, so every failure is an :class:`ExternalAuthError`
with one safe line (no Secret data, no body beyond the API server's own Status message).
Compare-and-swap has one convention: ``resource_version=`` (a keyword every Secret patch
must pass, None for an unconditional write) goes into the merge patch's metadata, and a
changed object answers 409 (:class:`ConflictError`). Watch streams have one parser,
:class:`WatchStream`: a 410 Gone is :class:`WatchExpired` (list again), any other ``ERROR``
event the translated error. JSON in and out is orjson's (a few times faster than the
standard library's at the storm's thousands of bodies, answers and watch events;
docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import orjson
import urllib3

from externalauth import GROUP, VERSION
from externalauth.errors import NotFoundError, PermanentError
from externalauth.kube import translating
from externalauth.kube.connection import Connection, Response, connect
from externalauth.model.durations import format_time
from externalauth.policy import timing

log = logging.getLogger(__name__)
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON = {"Content-Type": "application/json"}
API = f"{GROUP}/{VERSION}"
LINK_KIND = "ExternalAuthLink"
#: The watch event types that carry an object (bookmarks carry only a resourceVersion).
CHANGES = ("ADDED", "MODIFIED", "DELETED")


@dataclasses.dataclass(frozen=True)
class Resource:
    """A kind to list and watch: ``plural`` of ``api_version`` (``v1`` or ``group/version``)."""

    api_version: str
    plural: str
    kind: str


SECRETS = Resource("v1", "secrets", "Secret")
LINKS = Resource(API, "externalauthlinks", LINK_KIND)
EVENTS = Resource("v1", "events", "Event")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


def send(client: Connection, method: str, *, what: str, **kwargs: Any) -> Response:
    """One request to the API server; a failure to get an answer is raised translated
    (:func:`translating.error_for_exception`). The answer itself is not checked."""
    try:
        return client.request(method, **kwargs)
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:  # no answer, or unsendable
        raise translating.error_for_exception(e, what=what, server=str(client.url)) from e


class WatchStream:
    """The events of one watch request as ``(type, object)``, bookmarks included, in order.

    The one watch parser: a 410 Gone (as the answer or as an ``ERROR`` event) raises
    :class:`WatchExpired`; any other error answer or ``ERROR`` event, a line that is not
    JSON, or a connection lost mid-stream raises the translated :class:`ExternalAuthError`.
    :meth:`shutdown` unblocks a reader in another thread."""

    def __init__(self, response: Response, *, what: str, server: str) -> None:
        self._response = response
        self.what = what
        self._server = server

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        resp = self._response
        if resp.status_code == 410:
            raise WatchExpired()
        if resp.status_code != 200:
            translating.json_object(resp, what=self.what)  # raises the translated error
            raise PermanentError(f"{self.what}: the API server answered {resp.status_code}")
        try:
            for line in resp.iter_lines():
                if not line:
                    continue
                yield self._event(line)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise translating.error_for_exception(e, what=self.what, server=self._server) from e

    def _event(self, line: bytes) -> tuple[str, dict[str, Any]]:
        try:
            event = orjson.loads(line)
        except ValueError:
            raise PermanentError(f"{self.what}: the API server sent something that is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise PermanentError(f"{self.what}: the API server sent an event without an object")
        kind, obj = str(event.get("type")), event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired()
            raise translating.error_for_status(obj, what=f"{self.what}: the watch ended with an error")
        return kind, obj

    def shutdown(self) -> None:
        self._response.shutdown()

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class Kube:
    """The API server, as the operator and the CLI use it (raw dicts in, raw dicts out)."""

    def __init__(self, client: Connection, *, component: str = "externalauth-operator") -> None:
        self.client = client
        self.component = component
        self.writes = 0  # for benchmarks: writes sent

    @classmethod
    def connect(cls, *, kubeconfig: str | None, context: str | None, impersonate: str | None = None,
                impersonate_groups: Sequence[str] = (), timeout: float | None = 15.0,
                pool_size: int = 4, component: str = "externalauth") -> Kube:
        """A client found as kubectl finds its credentials (a command's: a small pool)."""
        return cls(connect(kubeconfig=kubeconfig, context=context, impersonate=impersonate,
                           impersonate_groups=impersonate_groups, pool_size=pool_size, timeout=timeout),
                   component=component)

    @property
    def context_namespace(self) -> str | None:
        """The ``namespace`` the kubeconfig context names, if it names one."""
        selection = self.client.config.selection
        return selection.namespace if selection.namespace_set else None

    def _call(self, method: str, what: str, **kwargs: Any) -> dict[str, Any]:
        resp = send(self.client, method, what=what, **kwargs)
        if method != "GET":
            self.writes += 1
        return translating.json_object(resp, what=what)

    def _write(self, method: str, what: str, **kwargs: Any) -> None:
        """A write whose answer the caller does not read (an event): its status is checked,
        its body is not decoded."""
        resp = send(self.client, method, what=what, **kwargs)
        self.writes += 1
        error = translating.error_for_answer(resp, what=what)
        if error is not None:
            raise error

    # --- listing and watching any kind ------------------------------------------------
    def list_page(self, resource: Resource, *, namespace: str | None,
                  params: Mapping[str, Any]) -> dict[str, Any]:
        """One page of a listing (``limit``/``continue`` in ``params``)."""
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        return self._call("GET", f"listing {resource.kind}s {where}", version=resource.api_version,
                          namespace=namespace, url=resource.plural, params=params)

    def watch(self, resource: Resource, *, namespace: str | None, resource_version: str, seconds: int,
              params: Mapping[str, Any] | None = None, what: str = "",
              timeout: tuple[float, float] | None = None) -> WatchStream:
        """A watch after ``resource_version`` (with bookmarks) that the API server ends after
        ``seconds``; ``params`` adds selectors; ``timeout`` (connect, read) defaults to the
        watch timeouts of :mod:`~externalauth.policy.timing` around ``seconds``. Use it as a
        context manager."""
        what = what or f"watching {resource.kind}s in {namespace or 'all namespaces'}"
        seconds = max(1, seconds)
        query = {**(params or {}), "watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(seconds)}
        resp = send(self.client, "GET", what=what, version=resource.api_version, namespace=namespace,
                    url=resource.plural, params=query, stream=True,
                    timeout=timeout or (timing.WATCH_CONNECT_TIMEOUT,
                                        seconds + timing.WATCH_READ_TIMEOUT - timing.WATCH_SERVER_TIMEOUT))
        return WatchStream(resp, what=what, server=self.client.url)

    # --- Secrets -----------------------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"reading Secret {namespace}/{name}",
                              url=f"secrets/{name}", namespace=namespace)
        except NotFoundError:
            return None

    def get_secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Only the Secret's metadata (a PartialObjectMetadata): whether it exists and how it
        is labelled, without its data ever reaching this process (contract §3)."""
        try:
            return self._call("GET", f"looking up Secret {namespace}/{name}",
                              url=f"secrets/{name}", namespace=namespace, headers={
                                  "Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"})
        except NotFoundError:
            return None

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", f"creating Secret {namespace}/{name}", namespace=namespace,
                          url="secrets", data=orjson.dumps(body), headers=JSON)

    def patch_secret(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch a Secret. With ``resource_version`` it is a compare-and-swap: the API
        server answers 409 (:class:`ConflictError`) if the Secret changed since. A version
        inside ``patch`` is refused: the keyword is the one convention."""
        if "resourceVersion" in (patch.get("metadata") or {}):
            raise ValueError("pass the resourceVersion as resource_version=, not inside the patch")
        body = dict(patch)
        if resource_version is not None:
            body["metadata"] = {**patch.get("metadata", {}), "resourceVersion": resource_version}
        return self._call("PATCH", f"writing Secret {namespace}/{name}", url=f"secrets/{name}",
                          namespace=namespace, data=orjson.dumps(body), headers=MERGE)

    def delete_secret(self, namespace: str, name: str, *, uid: str | None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call("DELETE", f"deleting Secret {namespace}/{name}", namespace=namespace,
                   url=f"secrets/{name}", data=orjson.dumps(body), headers=JSON)

    # --- providers ---------------------------------------------------------------
    def get_provider(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"ExternalAuthProvider {name}", version=API,
                          url=f"externalauthproviders/{name}")

    def list_providers(self) -> list[dict[str, Any]]:
        listing = self._call("GET", "listing ExternalAuthProviders", version=API, url="externalauthproviders")
        items: list[dict[str, Any]] = listing.get("items") or []
        for item in items:
            item.setdefault("apiVersion", API)
            item.setdefault("kind", "ExternalAuthProvider")
        return items

    def patch_provider_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"writing status of ExternalAuthProvider {name}",
                          version=API, url=f"externalauthproviders/{name}/status",
                          data=orjson.dumps({"status": status}), headers=MERGE)

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
        """(type, link) changes after ``resource_version``, for at most ``seconds`` (the API
        server ends the watch then); no bookmarks. :class:`WatchExpired` on 410 Gone."""
        where = f"{namespace}/{name}" if namespace and name else f"in {namespace or 'all namespaces'}"
        with self.watch(LINKS, namespace=namespace, resource_version=resource_version, seconds=seconds,
                        params={"fieldSelector": f"metadata.name={name}"} if name else None,
                        what=f"watching ExternalAuthLink {where}") as stream:
            for kind, obj in stream:
                if kind in CHANGES:
                    yield kind, obj

    def delete_link(self, namespace: str, name: str, *, uid: str | None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call("DELETE", f"deleting ExternalAuthLink {namespace}/{name}", version=API, namespace=namespace,
                   url=f"externalauthlinks/{name}", data=orjson.dumps(body), headers=JSON)

    def create_link(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", f"creating ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url="externalauthlinks",
                          data=orjson.dumps(body), headers=JSON)

    def patch_link(self, namespace: str, name: str, patch: dict[str, Any], *,
                   what: str = "updating") -> dict[str, Any]:
        return self._call("PATCH", f"{what} ExternalAuthLink {namespace}/{name}", version=API,
                          namespace=namespace, url=f"externalauthlinks/{name}",
                          data=orjson.dumps(patch), headers=MERGE)

    def patch_link_annotations(self, namespace: str, name: str,
                               annotations: dict[str, str | None]) -> dict[str, Any]:
        return self.patch_link(namespace, name, {"metadata": {"annotations": annotations}}, what="annotating")

    def patch_link_finalizers(self, namespace: str, name: str, finalizers: list[str], *,
                              resource_version: str | None) -> dict[str, Any]:
        """Replace the link's finalizers (a merge patch replaces a list whole); with
        ``resource_version`` a compare-and-swap (409 if the link changed)."""
        metadata: dict[str, Any] = {"finalizers": finalizers or None}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return self.patch_link(namespace, name, {"metadata": metadata}, what="writing finalizers of")

    def patch_link_status(self, namespace: str, name: str, status: dict[str, Any], *,
                          resource_version: str | None = None) -> dict[str, Any]:
        """Merge ``status`` into the link's; with ``resource_version`` a compare-and-swap
        (409 if the link changed since: a replica never overwrites a status it has not seen)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call("PATCH", f"writing status of ExternalAuthLink {namespace}/{name}",
                          version=API, namespace=namespace,
                          url=f"externalauthlinks/{name}/status",
                          data=orjson.dumps(body), headers=MERGE)

    # --- events ------------------------------------------------------------------
    def link_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The events about one link, oldest first."""
        selector = f"involvedObject.kind={LINK_KIND},involvedObject.name={name}"
        body = self._call("GET", f"listing the events of ExternalAuthLink {namespace}/{name}",
                          namespace=namespace, url="events", params={"fieldSelector": selector})
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def list_events(self, namespace: str, *, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The core/v1 events matching the field ``selector``, and the list's resourceVersion."""
        body = self._call("GET", f"listing the events in {namespace}", namespace=namespace, url="events",
                          params={"fieldSelector": selector})
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch_events(self, namespace: str, *, selector: str, resource_version: str,
                     seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, event) changes for the core/v1 events in ``namespace`` that match the field
        ``selector``; no bookmarks. :class:`WatchExpired` on 410 Gone."""
        with self.watch(EVENTS, namespace=namespace, resource_version=resource_version, seconds=seconds,
                        params={"fieldSelector": selector}, what=f"watching the events in {namespace}") as stream:
            for kind, obj in stream:
                if kind in CHANGES:
                    yield kind, obj

    def post_event(self, obj: dict[str, Any], *, type_: str, reason: str, message: str,
                   now: dt.datetime) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        stamp = format_time(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", API),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._write("POST", f"posting event {reason}", url="events", namespace=namespace,
                    data=orjson.dumps(event), headers=JSON)

    def close(self) -> None:
        self.client.close()
