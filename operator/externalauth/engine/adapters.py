"""The real ports: the blocking Kubernetes and provider clients, each run in its own
thread pools (contract §9.14: a slow provider cannot stall API-server writes; §9.15: nor
another provider's calls, each provider has its own threads)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar, cast

from externalauth.engine import scheduling
from externalauth.engine.scheduling import FairSlots
from externalauth.kube.api import Kube
from externalauth.model.bodies import RawBody
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.oauth.exchanging import ProviderClient
from externalauth.policy import revocations
from externalauth.policy.classifying import ExchangeResult, ValidationOutcome

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(pool: ThreadPoolExecutor, fn: Callable[P, T], /,
                       *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in ``pool``, type-checked against ``fn``'s signature.

    As ``loop.run_in_executor`` (a call cancelled before a thread took it never runs), but
    the thread settles the loop's future itself, with one ``call_soon_threadsafe``, instead
    of chaining a second future to it: about a third less CPU per hand-off with ten calls
    in flight, and a refresh makes five or more (docs/benchmarks.md)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # handed to the awaiting task, as run_in_executor does
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, done, None, e)
        else:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, done, result, None)

    job = pool.submit(work)
    try:
        return await done
    except asyncio.CancelledError:
        job.cancel()  # not started yet: it never runs
        raise


def _settle(done: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if done.done():  # cancelled meanwhile
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(cast(T, result))


class ThreadedKube:
    """:class:`~externalauth.engine.ports.KubePort` over the blocking :class:`Kube`.

    Urgent calls (persists of new tokens and their re-reads) run in ``urgent_pool``, a
    pool of their own: a backlog of status writes, events and claims in ``pool`` cannot
    hold back a token that so far lives only in memory (the kill window).

    The others wait for one of ``slots`` places (the pool's threads) in a line of the
    engine's own instead of the pool's first-come queue (contract §9.16): the calls of due
    refreshes (:func:`~externalauth.engine.scheduling.due_work`: claims, releases, re-reads)
    before status writes, events and the claims of calls that are not due, and within each,
    round-robin over namespaces, so that 1,000 status writes of one namespace queued first
    do not hold back another namespace's claims. Without ``slots``, the pool's queue."""

    def __init__(self, kube: Kube, pool: ThreadPoolExecutor, *,
                 urgent_pool: ThreadPoolExecutor | None = None, slots: int | None = None) -> None:
        self.kube = kube
        self._pool = pool
        self._urgent_pool = urgent_pool or pool
        self._line = FairSlots(slots) if slots else None

    async def _call(self, namespace: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the pool, once it is this call's turn (namespace ``""``: cluster-scoped)."""
        if self._line is None:
            return await run_blocking(self._pool, fn, *args, **kwargs)
        async with self._line.slot(namespace, due=scheduling.is_due()):
            return await run_blocking(self._pool, fn, *args, **kwargs)

    async def get_secret(self, namespace: str, name: str, *, urgent: bool = False) -> RawBody | None:
        if urgent:
            body = await run_blocking(self._urgent_pool, self.kube.get_secret, namespace, name)
        else:
            body = await self._call(namespace, self.kube.get_secret, namespace, name)
        return cast(RawBody, body) if body is not None else None

    async def get_secret_metadata(self, namespace: str, name: str) -> RawBody | None:
        body = await self._call(namespace, self.kube.get_secret_metadata, namespace, name)
        return cast(RawBody, body) if body is not None else None

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any],
                           *, resource_version: str | None, urgent: bool = False) -> RawBody:
        if urgent:
            return cast(RawBody, await run_blocking(self._urgent_pool, self.kube.patch_secret, namespace, name,
                                                    dict(patch), resource_version=resource_version))
        return cast(RawBody, await self._call(namespace, self.kube.patch_secret, namespace, name,
                                              dict(patch), resource_version=resource_version))

    async def patch_link_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                *, resource_version: str | None = None) -> RawBody:
        return cast(RawBody, await self._call(namespace, self.kube.patch_link_status,
                                              namespace, name, dict(status), resource_version=resource_version))

    async def patch_provider_status(self, name: str, status: Mapping[str, Any]) -> RawBody:
        return cast(RawBody, await self._call("", self.kube.patch_provider_status, name, dict(status)))

    async def post_event(self, obj: RawBody, *, type_: str, reason: str, message: str,
                         now: dt.datetime) -> None:
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        await self._call(namespace, self.kube.post_event, dict(obj), type_=type_,
                         reason=reason, message=message, now=now)

    async def patch_link_finalizers(self, namespace: str, name: str, finalizers: list[str],
                                    *, resource_version: str | None) -> RawBody:
        return cast(RawBody, await self._call(namespace, self.kube.patch_link_finalizers, namespace, name,
                                              list(finalizers), resource_version=resource_version))

    async def list_providers(self) -> list[RawBody]:
        return cast(list[RawBody], await self._call("", self.kube.list_providers))


class ThreadedProvider:
    """:class:`~externalauth.engine.ports.ProviderPort` over the blocking :class:`ProviderClient`,
    with threads of its own: ``calls`` for token calls (the provider's K, which the engine's
    semaphore also bounds) and ``calls`` for validations and revocations, so that neither
    kind waits behind the other, nor behind another provider's calls (contract §9.15). OIDC
    discovery runs elsewhere (client construction, the client's background retry)."""

    def __init__(self, client: ProviderClient, *, calls: int) -> None:
        self.client = client
        self._tokens = ThreadPoolExecutor(calls, thread_name_prefix="externalauth-token")
        self._checks = ThreadPoolExecutor(calls, thread_name_prefix="externalauth-check")

    def __repr__(self) -> str:
        return f"ThreadedProvider({self.client!r})"

    @property
    def spec(self) -> ProviderSpec:
        return self.client.spec

    async def refresh(self, refresh_token: SecretStr, *, now: dt.datetime,
                      send_before: float | None = None) -> ExchangeResult:
        # send_before is on the engine clock's monotonic scale, which for the real ports is
        # time.monotonic(), the client's own: it checks it in the worker thread.
        return await run_blocking(self._tokens, self.client.refresh, refresh_token, now=now,
                                  send_before=send_before)

    async def validate(self, access_token: SecretStr, *, now: dt.datetime) -> ValidationOutcome:
        return await run_blocking(self._checks, self.client.validate, access_token, now=now)

    async def revoke(self, *, refresh_token: SecretStr | None, access_token: SecretStr | None,
                     now: dt.datetime) -> revocations.Outcome:
        return await run_blocking(self._checks, self.client.revoke, refresh_token=refresh_token,
                                  access_token=access_token, now=now)

    def close(self) -> None:
        # Calls already queued still run (each checks its own lease before sending).
        self._tokens.shutdown(wait=False)
        self._checks.shutdown(wait=False)
        self.client.close()
