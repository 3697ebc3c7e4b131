"""A label-selected Secret watch (server-side ``labelSelector``): list, then watch from
the list's resourceVersion, re-list on 410 Gone, reconnect with backoff. Runs in a
thread and hands raw events to a callback. Never lists unlabelled Secrets."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import requests

from externalauth.kube.requesting import Kube

log = logging.getLogger(__name__)
Callback = Callable[[str, dict[str, Any]], None]


class SecretWatcher:
    def __init__(self, kube: Kube, *, namespace: str | None, selector: str, callback: Callback,
                 synced: Callable[[], None]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = selector
        self.callback = callback
        self.synced = synced
        self.stopping = threading.Event()
        self._known: set[tuple[str, str]] = set()
        self._response: requests.Response | None = None

    def _url_kwargs(self) -> dict[str, Any]:
        return {"url": "secrets", "namespace": self.namespace} if self.namespace else {"url": "secrets"}

    def _list(self) -> str:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": self.selector, "limit": 500}
        while True:
            resp = self.kube.client.get(params=params, **self._url_kwargs())
            resp.raise_for_status()
            page = resp.json()
            items.extend(page.get("items") or [])
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                break
            params["continue"] = cont
        seen = set()
        for item in items:
            item.setdefault("apiVersion", "v1")
            item.setdefault("kind", "Secret")
            meta = item.get("metadata", {})
            seen.add((meta.get("namespace", ""), meta.get("name", "")))
            self.callback("ADDED", item)
        for ns, name in self._known - seen:
            self.callback("DELETED", {"metadata": {"namespace": ns, "name": name}})
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
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("Secret watch (%s) failed: %s; retrying in %.1fs",
                            self.namespace or "all namespaces", type(e).__name__, wait)
                self.stopping.wait(wait)

    def _watch(self, rv: str) -> str | None:
        params = {"labelSelector": self.selector, "watch": "true", "resourceVersion": rv,
                  "allowWatchBookmarks": "true", "timeoutSeconds": "290"}
        resp = self.kube.client.get(params=params, stream=True, timeout=(10, 320), **self._url_kwargs())
        self._response = resp
        try:
            if resp.status_code == 410:
                return None
            resp.raise_for_status()
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
                obj.setdefault("apiVersion", "v1")
                obj.setdefault("kind", "Secret")
                self.callback(kind, obj)
            return rv
        finally:
            resp.close()

    def stop(self) -> None:
        self.stopping.set()
        resp = self._response
        if resp is not None:
            try:
                resp.raw._fp.fp.raw._sock.shutdown(2)  # type: ignore[union-attr]  # unblock iter_lines
            except Exception:  # noqa: S110 - best effort
                pass
