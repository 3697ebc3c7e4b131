"""Raw API calls with compare-and-swap semantics. Synchronous; run them in a thread."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import urllib3

from externalauth import GROUP, VERSION
from externalauth.errors import NotFoundError
from externalauth.kube import translating
from externalauth.kube.connecting import Connection, Response
from externalauth.model.durations import format_time

log = logging.getLogger(__name__)
MERGE = {"Content-Type": "application/merge-patch+json"}
API = f"{GROUP}/{VERSION}"


def send(client: Connection, method: str, *, what: str, **kwargs: Any) -> Response:
    """One request to the API server; a failure to get an answer is raised translated
    (:func:`translating.error_for_exception`). The answer itself is not checked."""
    try:
        resp = client.request(method, **kwargs)
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:  # no answer, or unsendable
        raise translating.error_for_exception(e, what=what, server=str(client.url)) from e
    return resp


class Kube:
    """The operator's narrow window onto the API server (raw dicts in, raw dicts out)."""

    def __init__(self, client: Connection, *, component: str = "externalauth-operator") -> None:
        self.client = client
        self.component = component
        self.writes = 0  # for benchmarks: writes sent

    def _call(self, method: str, what: str, **kwargs: Any) -> dict[str, Any]:
        resp = send(self.client, method, what=what, **kwargs)
        if method != "GET":
            self.writes += 1
        return translating.json_object(resp, what=what)

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

    def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch a Secret. With ``resource_version`` it is a compare-and-swap:
        the API server answers 409 (:class:`ConflictError`) if the Secret changed."""
        body = dict(patch)
        if resource_version is not None:
            body["metadata"] = {**patch.get("metadata", {}), "resourceVersion": resource_version}
        return self._call("PATCH", f"writing Secret {namespace}/{name}", url=f"secrets/{name}",
                          namespace=namespace, data=json.dumps(body), headers=MERGE)

    # --- custom resources --------------------------------------------------------
    def list_providers(self) -> list[dict[str, Any]]:
        listing = self._call("GET", "listing ExternalAuthProviders", version=API, url="externalauthproviders")
        items: list[dict[str, Any]] = listing.get("items") or []
        for item in items:
            item.setdefault("apiVersion", API)
            item.setdefault("kind", "ExternalAuthProvider")
        return items

    def patch_link_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"writing status of ExternalAuthLink {namespace}/{name}",
                          version=API, namespace=namespace,
                          url=f"externalauthlinks/{name}/status",
                          data=json.dumps({"status": status}), headers=MERGE)

    def patch_link_annotations(self, namespace: str, name: str,
                               annotations: dict[str, str | None]) -> dict[str, Any]:
        return self._call("PATCH", f"annotating ExternalAuthLink {namespace}/{name}",
                          version=API, namespace=namespace, url=f"externalauthlinks/{name}",
                          data=json.dumps({"metadata": {"annotations": annotations}}), headers=MERGE)

    def patch_link_finalizers(self, namespace: str, name: str, finalizers: list[str], *,
                              resource_version: str | None) -> dict[str, Any]:
        """Replace the link's finalizers (a merge patch replaces a list whole); with
        ``resource_version`` a compare-and-swap (409 if the link changed)."""
        metadata: dict[str, Any] = {"finalizers": finalizers or None}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return self._call("PATCH", f"writing finalizers of ExternalAuthLink {namespace}/{name}",
                          version=API, namespace=namespace, url=f"externalauthlinks/{name}",
                          data=json.dumps({"metadata": metadata}), headers=MERGE)

    def patch_provider_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"writing status of ExternalAuthProvider {name}",
                          version=API, url=f"externalauthproviders/{name}/status",
                          data=json.dumps({"status": status}), headers=MERGE)

    # --- events ------------------------------------------------------------------
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
        self._call("POST", f"posting event {reason}", url="events", namespace=namespace,
                   data=json.dumps(event), headers={"Content-Type": "application/json"})
