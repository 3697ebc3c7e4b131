"""An engine wired to fakes: one provider ``gh``, one link ``ns/l`` on Secret ``ns/tok``."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from externalauth.engine.reconciler import Engine
from externalauth.engine.settings import Settings
from externalauth.model import conditions as cond
from externalauth.model.names import PROVIDER_LABEL
from tests.unit.engine.fakes import FakeClock, FakeKube, FakeProvider, factory

LINK = ("ns", "l")
SECRET = ("ns", "tok")
T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]]) -> Callable[[], T]:
    """Run an async test body on a fresh event loop (no plugin needed)."""
    def wrapper() -> T:
        return asyncio.run(test())  # type: ignore[arg-type]
    wrapper.__name__ = test.__name__
    wrapper.__doc__ = test.__doc__
    return wrapper


class Rig:
    def __init__(self, *, validate: bool = False, max_concurrent: int = 10,
                 settings: Settings | None = None) -> None:
        self.journal: list[str] = []
        self.clock = FakeClock()
        self.kube = FakeKube(self.journal)
        self.provider = FakeProvider(self.journal, self.clock)
        self.engine = Engine(self.kube, make_client=factory(lambda spec, secret: self.provider),
                             settings=settings or Settings(), clock=self.clock, holder="me")
        self._validate = validate
        self._max_concurrent = max_concurrent

    async def add_provider(self, **spec: Any) -> None:
        """Provider ``gh``: a generic one, or what ``spec`` says (e.g. ``type="gitea"``)."""
        default: dict[str, Any] = {"type": "generic", "tokenURL": "https://provider.test/token",
                                   "validateURL": "https://provider.test/user" if self._validate else ""}
        body = {"metadata": {"name": "gh", "generation": 1, "resourceVersion": "1"},
                "spec": {"clientID": "id", "maxConcurrentRefreshes": self._max_concurrent,
                         **(spec or default)}}
        self.kube.providers["gh"] = body
        await self.engine.on_provider("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]

    def add_secret(self, name: str = "tok", *, access: str = "access-0", refresh: str | None = "refresh-0",
                   expires_in: float = 60, annotations: dict[str, str] | None = None,
                   labels: dict[str, str] | None = None, immutable: bool = False) -> None:
        """A token Secret; one opted in to ``gh`` is delivered by the watch, others are not."""
        body = self.kube.put_secret("ns", name, access=access, refresh=refresh,
                                    expiry=self.clock.now() + dt.timedelta(seconds=expires_in),
                                    annotations=annotations, labels=labels, immutable=immutable)
        if PROVIDER_LABEL in body["metadata"].get("labels", {}):
            self.engine.on_secret("ADDED", body)

    def add_link(self, name: str = "l", *, secret: str = "tok", annotations: dict[str, str] | None = None,
                 **spec: Any) -> None:
        body: dict[str, Any] = {
            "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1,
                         "annotations": dict(annotations or {})},
            "spec": {"providerName": "gh", "secretName": secret, "validate": self._validate, **spec}}
        self.kube.bump(body)
        self.kube.links[("ns", name)] = body
        self.engine.on_link("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]

    async def standard(self, *, link: dict[str, Any] | None = None, **secret: Any) -> None:
        """The provider, the link, then its Secret: the order of the operator's start-up
        (links are listed before Secrets, so that the cache keeps the data of exactly the
        Secrets that links read)."""
        await self.add_provider()
        self.add_link(**(link or {}))
        self.add_secret(**secret)

    def request_refresh(self, value: str, key: tuple[str, str] = LINK) -> None:
        """A user sets the refresh annotation (a new resourceVersion, then the watch event)."""
        self.kube.links[key]["metadata"]["annotations"]["externalauth.io/refresh-requested"] = value
        self.kube.bump(self.kube.links[key])
        self.engine.on_link("MODIFIED", copy.deepcopy(self.kube.links[key]))  # type: ignore[arg-type]

    def replica(self, holder: str, provider: FakeProvider | None = None) -> Engine:
        """Another replica on the same API server (its own memory; by default the same
        provider fake, so its calls land in the same journal)."""
        return Engine(self.kube, make_client=factory(lambda spec, secret: provider or self.provider),
                      settings=self.engine.settings, clock=self.clock, holder=holder)

    async def show(self, engine: Engine) -> None:
        """Deliver everything in the fake API server to ``engine`` (its watches' first listing)."""
        for provider in self.kube.providers.values():
            await engine.on_provider("ADDED", copy.deepcopy(provider))  # type: ignore[arg-type]
        for secret in self.kube.secrets.values():
            engine.on_secret("ADDED", copy.deepcopy(secret))  # type: ignore[arg-type]
        for link in self.kube.links.values():
            engine.on_link("ADDED", copy.deepcopy(link))  # type: ignore[arg-type]

    async def reconcile(self, key: tuple[str, str] = LINK) -> None:
        """What the scheduler does when the link's time has come."""
        self.engine.scheduler.forget(key)
        await self.engine.reconcile_link(key)

    def steps(self, *kinds: str, full: bool = False) -> list[str]:
        """The journal's entries of these ``kinds`` (their first word, or whole)."""
        return [e if full else e.split(" ")[0] for e in self.journal if e.split(" ")[0] in kinds]

    def condition(self, kind: str, key: tuple[str, str] = LINK) -> tuple[str, str]:
        found = cond.find(self.kube.links[key].get("status", {}).get("conditions") or [], kind)
        assert found is not None, f"no {kind} condition"
        return found.get("status", ""), found.get("reason", "")

    def event_reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.kube.events]

    async def settle(self) -> None:
        """Wait until every task the engine left running is done: provider reconciles, and
        the events they and the refreshes post (exact: no counting of loop turns)."""
        while len(self.engine.background) or len(self.engine.recorder.background):
            assert await self.engine.background.wait(timeout=5.0), "provider reconciles never ended"
            assert await self.engine.recorder.background.wait(timeout=5.0), "events never posted"


async def until(condition: Callable[[], object], *, rounds: int = 1000,
                tasks: Iterable[asyncio.Task[Any]] = ()) -> None:
    """Yield to the loop until ``condition()`` holds, failing after ``rounds`` turns (a
    fake-clock test never needs wall time: a condition that does not hold soon never will),
    or as soon as one of ``tasks`` failed (with its exception)."""
    watched = list(tasks)
    for _ in range(rounds):
        if condition():
            return
        for task in watched:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
