"""Objects the engine tests set up: a provider backed by the simulator, token Secrets, links.

Uses the official ``kubernetes`` client as admin (the operator itself talks through
its own client on requests, so the tests observe it through a second, independent client).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiException

from providersim import Simulator
from tests.harness.simulator_fixtures import CLIENT_ID, CLIENT_SECRET
from tests.harness.waiting import wait_for

G, V = "externalauth.io", "v1alpha1"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class World:
    def __init__(self, *, namespace: str, core_v1: Any, custom_objects: Any, sim: Simulator) -> None:
        self.ns = namespace
        self.core = core_v1
        self.co = custom_objects
        self.sim = sim
        self.provider = f"gh-{namespace}"[:63]
        self._providers: list[str] = []

    # providers ---------------------------------------------------------------------
    def make_provider(self, name: str | None = None, *, client_secret: str = CLIENT_SECRET,
                      **spec: Any) -> str:
        name = name or self.provider
        self.core.create_namespaced_secret(self.ns, {
            "metadata": {"name": f"{name}-client"}, "stringData": {"clientSecret": client_secret}})
        body = {
            "apiVersion": f"{G}/{V}", "kind": "ExternalAuthProvider", "metadata": {"name": name},
            "spec": {"type": "github", "clientID": CLIENT_ID, "baseURL": self.sim.url,
                     "validateURL": f"{self.sim.url}/user", "caBundle": self.sim.ca_pem,
                     "clientSecretRef": {"namespace": self.ns, "name": f"{name}-client",
                                         "key": "clientSecret"}, **spec},
        }
        self.co.create_cluster_custom_object(G, V, "externalauthproviders", body)
        self._providers.append(name)
        return name

    def provider_condition(self, name: str | None = None) -> dict[str, Any] | None:
        obj = self.co.get_cluster_custom_object(G, V, "externalauthproviders", name or self.provider)
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == "Ready"), None)

    def set_client_secret(self, value: str, name: str | None = None) -> None:
        self.core.patch_namespaced_secret(f"{name or self.provider}-client", self.ns,
                                          {"data": {"clientSecret": b64(value)}})

    # token Secrets -----------------------------------------------------------------
    def make_token_secret(self, name: str, *, login: str = "alice", expires_in: float | None = 3600,
                          access: str | None = None, refresh: str | None = None,
                          extra: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                          data: dict[str, str] | None = None) -> dict[str, str]:
        """A Secret holding a fresh simulator grant (or the given values)."""
        if data is None:
            if access is None:
                grant = self.sim.issue_grant(CLIENT_ID, login=login)
                access, refresh = grant.access_token, grant.refresh_token
            data = {"access_token": access, "token_type": "bearer"}
            if refresh:
                data["refresh_token"] = refresh
            if expires_in is not None:
                data["expiry"] = rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in))
            data.update(extra or {})
        if labels is None:  # opted in to this world's provider (contract §3)
            labels = {"externalauth.io/provider": self.provider}
        self.core.create_namespaced_secret(self.ns, {
            "metadata": {"name": name, "labels": labels}, "type": "Opaque",
            "data": {k: b64(v) for k, v in data.items()}})
        return data

    def secret(self, name: str) -> Any:
        return self.core.read_namespaced_secret(name, self.ns)

    def secret_data(self, name: str) -> dict[str, str]:
        return unb64(self.secret(name).data)

    def rewrite_secret(self, name: str, data: dict[str, str]) -> None:
        self.core.patch_namespaced_secret(name, self.ns, {"data": {k: b64(v) for k, v in data.items()}})

    # links -------------------------------------------------------------------------
    def make_link(self, name: str, *, secret: str, provider: str | None = None, **spec: Any) -> None:
        body = {"apiVersion": f"{G}/{V}", "kind": "ExternalAuthLink",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {"providerName": provider or self.provider, "secretName": secret, **spec}}
        self.co.create_namespaced_custom_object(G, V, self.ns, "externalauthlinks", body)

    def link(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.co.get_namespaced_custom_object(G, V, self.ns, "externalauthlinks", name)
        return result

    def condition(self, link: str, kind: str = "Ready") -> dict[str, Any] | None:
        conditions = (self.link(link).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def request_refresh(self, link: str, value: str | None = None) -> str:
        value = value or uuid.uuid4().hex
        self.co.patch_namespaced_custom_object(
            G, V, self.ns, "externalauthlinks", link,
            {"metadata": {"annotations": {"externalauth.io/refresh-requested": value}}})
        return value

    def wait_condition(self, link: str, kind: str, status: str, reason: str | None = None,
                       timeout: float = 30) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            c = self.condition(link, kind)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None

        return wait_for(probe, timeout=timeout,
                        message=lambda: f"{link} {kind}={status}/{reason}; status is "
                                        f"{self.link(link).get('status')}")

    def wait_refreshed(self, link: str, request: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (self.link(link).get("status") or {}).get("lastRefreshRequest") == request
                        and self.link(link)["status"], timeout=timeout,
                        message=lambda: f"{link} to act on refresh request {request}: "
                                        f"{self.link(link).get('status')}")

    def events(self, link: str | None = None) -> list[Any]:
        items = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if link is None or e.involved_object.name == link]

    def event_reasons(self, link: str | None = None) -> list[str]:
        return [e.reason for e in self.events(link)]

    def cleanup(self) -> None:
        for name in self._providers:
            try:
                self.co.delete_cluster_custom_object(G, V, "externalauthproviders", name)
            except ApiException:
                pass


@pytest.fixture
def make_world(namespace: str, core_v1: Any, custom_objects: Any,
               make_simulator: Any) -> Iterator[Any]:
    """``make_world(**simulator_kwargs)``: a World over a new simulator (token lifetime 1 h
    unless overridden, so that a refreshed token is not due again at once)."""
    made: list[World] = []

    def make(**sim_kwargs: Any) -> World:
        sim = make_simulator(**{"access_token_lifetime": 3600, **sim_kwargs})
        w = World(namespace=namespace, core_v1=core_v1, custom_objects=custom_objects, sim=sim)
        made.append(w)
        return w

    yield make
    for w in made:
        w.cleanup()


@pytest.fixture
def world(make_world: Any) -> World:
    """A World over a github-mode simulator."""
    result: World = make_world()
    return result
