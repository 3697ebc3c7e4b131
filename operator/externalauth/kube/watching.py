"""A list-then-watch of one resource (optionally label-selected, server-side): list, then
watch from the list's resourceVersion with bookmarks, re-list on 410 Gone, reconnect with
backoff. Runs in a thread and hands raw events to a callback. A label-selected watch never
lists the objects outside its selector (unlabelled Secrets never reach this process)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from externalauth.kube import translating
from externalauth.kube.api import Kube
from externalauth.kube.connecting import Response
from externalauth.policy import timing

log = logging.getLogger(__name__)
Callback = Callable[[str, dict[str, Any]], None]
#: Objects per page of the first listing.
PAGE = 500


@dataclasses.dataclass(frozen=True)
class Resource:
    """What to watch: ``plural`` of ``api_version`` (``v1`` or ``group/version``), as ``kind``."""

    api_version: str
    plural: str
    kind: str


SECRETS = Resource("v1", "secrets", "Secret")


class Watcher:
    def __init__(self, kube: Kube, resource: Resource, *, namespace: str | None, selector: str,
                 callback: Callback, synced: Callable[[], None]) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.callback = callback
        self.synced = synced
        self.stopping = threading.Event()
        self._known: set[tuple[str, str]] = set()
        self._response: Response | None = None

    @property
    def name(self) -> str:
        where = self.namespace or "all namespaces"
        return f"{self.resource.kind} watch ({where}{', ' + self.selector if self.selector else ''})"

    def _where(self) -> dict[str, Any]:
        return {"version": self.resource.api_version, "url": self.resource.plural, "namespace": self.namespace}

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"labelSelector": self.selector, **more} if self.selector else more

    def _typed(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return obj

    def _list(self) -> str:
        params = self._params(limit=PAGE)
        seen: set[tuple[str, str]] = set()
        while True:
            resp = self.kube.client.get(params=params, **self._where())
            page = translating.json_object(resp, what=f"listing for the {self.name}")
            for item in page.get("items") or []:
                meta = item.get("metadata", {})
                seen.add((meta.get("namespace", ""), meta.get("name", "")))
                self.callback("ADDED", self._typed(item))
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                break
            params["continue"] = cont
        for ns, name in self._known - seen:
            self.callback("DELETED", self._typed({"metadata": {"namespace": ns, "name": name}}))
        self._known = seen
        rv: str = page.get("metadata", {}).get("resourceVersion", "")
        return rv

    def run(self) -> None:
        rv: str | None = None
        failures = 0
        first = True
        while not self.stopping.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    if first:
                        first = False
                        self.synced()
                rv = self._watch(rv)
                failures = 0
            except Exception as e:
                if self.stopping.is_set():
                    break
                failures += 1
                wait = timing.watch_retry(failures)
                log.warning("%s failed: %s; retrying in %.1fs", self.name, type(e).__name__, wait)
                self.stopping.wait(wait)

    def _watch(self, rv: str) -> str | None:
        params = self._params(watch="true", resourceVersion=rv, allowWatchBookmarks="true",
                             timeoutSeconds=str(timing.WATCH_SERVER_TIMEOUT))
        resp = self.kube.client.get(params=params, stream=True,
                                    timeout=(timing.WATCH_CONNECT_TIMEOUT, timing.WATCH_READ_TIMEOUT),
                                    **self._where())
        self._response = resp
        try:
            if resp.status_code == 410:
                return None
            if resp.status_code != 200:
                translating.json_object(resp, what=f"the {self.name}")  # raises the translated error
            for line in resp.iter_lines():
                if self.stopping.is_set():
                    return rv
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise RuntimeError(f"watch error {obj.get('code')}")
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                if kind == "BOOKMARK":
                    continue
                meta = obj.get("metadata", {})
                key = (meta.get("namespace", ""), meta.get("name", ""))
                if kind == "DELETED":
                    self._known.discard(key)
                else:
                    self._known.add(key)
                self.callback(kind, self._typed(obj))
            return rv
        finally:
            resp.close()

    def stop(self) -> None:
        self.stopping.set()
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()  # unblocks iter_lines in the watch thread
            except Exception:  # noqa: S110 - best effort
                pass
