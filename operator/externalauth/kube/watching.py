"""A list-then-watch of one resource (optionally label-selected, server-side): list, then
watch from the list's resourceVersion with bookmarks, re-list on 410 Gone, reconnect with
backoff. Runs in a thread and hands raw events to a callback. A label-selected watch never
lists the objects outside its selector (unlabelled Secrets never reach this process).

Every call goes through the one client (:meth:`Kube.list_page`, :meth:`Kube.watch`), so a
failure is a translated :class:`ExternalAuthError` with one safe line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from externalauth.errors import ExternalAuthError
from externalauth.kube import api
from externalauth.kube.api import Kube, WatchExpired, WatchStream
from externalauth.policy import timing

log = logging.getLogger(__name__)
Callback = Callable[[str, dict[str, Any]], None]
#: Objects per page of the first listing.
PAGE = 500
#: Objects per page of a listing of Secrets. A page is read whole (and decoding it holds
#: about 4 times its size for a moment), and a tenant may write Secrets of up to 1 MiB of
#: data (about 1.6 MiB of JSON with 256 KiB of annotations) that carry the opt-in label: 5
#: of them keep one page under 8 MiB however big they are (contract §9.16; bench/
#: labelled_memory.py). 10,000 small token Secrets take 2,000 short requests at start-up.
SECRET_PAGE = 5

Resource = api.Resource
SECRETS = api.SECRETS


class Watcher:
    def __init__(self, kube: Kube, resource: Resource, *, namespace: str | None, selector: str,
                 callback: Callback, synced: Callable[[], None], page: int = PAGE) -> None:
        self.kube = kube
        self.page = page
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.callback = callback
        self.synced = synced
        self.stopping = threading.Event()
        self._known: set[tuple[str, str]] = set()
        self._stream: WatchStream | None = None

    @property
    def name(self) -> str:
        where = self.namespace or "all namespaces"
        return f"{self.resource.kind} watch ({where}{', ' + self.selector if self.selector else ''})"

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"labelSelector": self.selector, **more} if self.selector else more

    def _typed(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return obj

    def _list(self) -> str:
        params = self._params(limit=self.page)
        seen: set[tuple[str, str]] = set()
        while True:
            page = self.kube.list_page(self.resource, namespace=self.namespace, params=params)
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
            except WatchExpired:
                rv = None  # too far behind: list again
            except Exception as e:  # translated errors, and a bug in a callback: neither ends the watch
                if self.stopping.is_set():
                    break
                failures += 1
                wait = timing.watch_retry(failures)
                said = str(e) if isinstance(e, ExternalAuthError) else f"unexpected {type(e).__name__}"
                log.warning("%s failed: %s; retrying in %.1fs", self.name, said, wait)
                self.stopping.wait(wait)

    def _watch(self, rv: str) -> str:
        """Events after ``rv`` until the API server ends the watch; the last resourceVersion
        seen. :class:`WatchExpired` when ``rv`` is too old."""
        stream = self.kube.watch(self.resource, namespace=self.namespace, resource_version=rv,
                                 seconds=timing.WATCH_SERVER_TIMEOUT, params=self._params(),
                                 what=f"the {self.name}",
                                 timeout=(timing.WATCH_CONNECT_TIMEOUT, timing.WATCH_READ_TIMEOUT))
        self._stream = stream
        with stream:
            for kind, obj in stream:
                if self.stopping.is_set():
                    return rv
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

    def stop(self) -> None:
        self.stopping.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.shutdown()  # unblocks the reading watch thread
            except Exception:  # noqa: S110 - best effort
                pass
