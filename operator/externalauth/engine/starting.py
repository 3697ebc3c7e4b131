"""Start-up and shut-down of the engine inside kopf: the real ports, providers first,
then the first listing of the labelled Secrets and of the links, then the scheduler and
the metrics listener.

Secrets and links are watched by our own watch threads (:mod:`externalauth.kube.watching`),
not by kopf: each of the thousands of events a refresh storm causes (the echoes of our own
writes) cost kopf's per-event machinery and per-object state, which the engine never
needed (docs/benchmarks.md). Their events reach the event loop in batches: one wake-up
for all the events that arrived since the last one."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from externalauth import GROUP, VERSION, metrics
from externalauth.engine.adapters import ThreadedKube, ThreadedProvider, run_blocking
from externalauth.engine.inbox import Inbox
from externalauth.engine.ports import ProviderPort
from externalauth.engine.reconciler import Engine
from externalauth.engine.settings import Settings
from externalauth.errors import TransientError
from externalauth.kube.api import Kube
from externalauth.kube.connection import connect
from externalauth.kube.watching import PAGE, SECRET_PAGE, SECRETS, Resource, Watcher
from externalauth.model.bodies import RawBody
from externalauth.model.names import PROVIDER_LABEL
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.oauth.exchanging import ProviderClient
from externalauth.policy import timing

log = logging.getLogger("externalauth")
LINKS = Resource(f"{GROUP}/{VERSION}", "externalauthlinks", "ExternalAuthLink")
#: Every namespace, for the labels a provider's namespaceSelector reads (cluster-scoped:
#: one watch in both modes).
NAMESPACES = Resource("v1", "namespaces", "Namespace")


@dataclasses.dataclass
class Options:
    """What ``externalauth run`` asks for."""

    namespaces: list[str] = dataclasses.field(default_factory=list)  # empty: all
    kubeconfig: str | None = None
    context: str | None = None
    metrics_port: int = 0
    metrics_address: str = metrics.DEFAULT_BIND_ADDRESS
    settings: Settings = dataclasses.field(default_factory=Settings)


@dataclasses.dataclass
class Running:
    engine: Engine
    watchers: list[Watcher]
    inbox: Inbox
    scheduler_task: asyncio.Task[None]
    pools: list[ThreadPoolExecutor]

    async def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.inbox.close()
        await self.engine.drain()
        self.scheduler_task.cancel()
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


async def start(options: Options) -> Running:
    settings = options.settings
    kube = Kube(connect(kubeconfig=options.kubeconfig, context=options.context))
    api_pool = ThreadPoolExecutor(settings.api_threads, thread_name_prefix="externalauth-api")
    # Persists of new tokens never wait behind status writes, events or claims (issue 17).
    persist_pool = ThreadPoolExecutor(settings.persist_threads, thread_name_prefix="externalauth-persist")
    # Only for building provider clients (OIDC discovery); each provider's calls run in
    # threads of its own (ThreadedProvider).
    provider_pool = ThreadPoolExecutor(settings.provider_threads, thread_name_prefix="externalauth-discovery")

    async def make_client(spec: ProviderSpec, secret: SecretStr | None) -> ProviderPort:
        # In the discovery pool: the constructor may run OIDC discovery (network I/O).
        client = await run_blocking(provider_pool, ProviderClient, spec, secret, observe=metrics.observer(spec.name),
                                    connect_timeout=settings.connect_timeout,
                                    read_timeout=settings.read_timeout,
                                    deadline=settings.provider_deadline)
        return ThreadedProvider(client, calls=spec.max_concurrent)

    engine = Engine(ThreadedKube(kube, api_pool, urgent_pool=persist_pool, slots=settings.api_threads),
                    make_client=make_client,
                    settings=settings)
    loop = asyncio.get_running_loop()

    # Providers first (few objects), so links never flap to ProviderNotFound at start.
    for item in await _list_providers(engine):
        await engine.on_provider("ADDED", item)

    # Then the links and the namespaces' labels, and only once they are listed the Secrets:
    # opted-in token Secrets (server-side label selector) in the served namespaces and every
    # Secret of the operator's own namespace (client secrets). In that order the cache keeps
    # the data of exactly the Secrets a link reads (contract §9.16: memory grows with links,
    # not with what tenants label), and each Secret event is cut down to that in its watch
    # thread, before it waits in the inbox. The scheduler waits for every first listing, so
    # that links are decided from the cache and not by one read each.
    served: list[str | None] = list(options.namespaces) or [None]
    first: list[tuple[Resource, str | None, str]] = [(LINKS, ns, "") for ns in served]
    first.append((NAMESPACES, None, ""))
    then: list[tuple[Resource, str | None, str]] = [(SECRETS, ns, PROVIDER_LABEL) for ns in served]
    then.append((SECRETS, settings.operator_namespace, ""))
    inbox = Inbox(loop)
    secret_events, link_events = inbox.sender(engine.on_secret), inbox.sender(engine.on_link)

    # In the watch threads. A version the cache already holds (the echo of our own claim,
    # persist or status write, whose answer was stored first) is dropped here: the storm's
    # 3,000 echoes are never cut down, queued or handled by the loop.
    def on_secret(kind: str, obj: RawBody) -> None:
        if kind == "DELETED":
            secret_events(kind, obj)
        elif not engine.caches.holds_secret(obj):
            secret_events(kind, engine.caches.prepare_secret(obj))

    def on_link(kind: str, obj: RawBody) -> None:
        if kind == "DELETED" or not engine.caches.holds_link(obj):
            link_events(kind, obj)

    handlers = {SECRETS: on_secret, LINKS: on_link, NAMESPACES: inbox.sender(engine.on_namespace)}
    watchers: list[Watcher] = []
    for scopes in (first, then):
        await _watch_until_listed(loop, kube, scopes, handlers, watchers)
    scheduler_task = loop.create_task(engine.scheduler.run(), name="scheduler")
    engine.scheduler.start()
    if options.metrics_port:
        metrics.serve(options.metrics_port, options.metrics_address)
    log.info("externalauth operator started (holder %s, shard %s)", engine.holder, settings.shard)
    return Running(engine=engine, watchers=watchers, inbox=inbox, scheduler_task=scheduler_task,
                   pools=[api_pool, persist_pool, provider_pool])


async def _watch_until_listed(loop: asyncio.AbstractEventLoop, kube: Kube,
                              scopes: list[tuple[Resource, str | None, str]],
                              handlers: dict[Resource, Callable[[str, RawBody], None]],
                              watchers: list[Watcher]) -> None:
    """Start a watch thread for each scope; return once each has handed its first listing to
    the loop (the inbox's events are handled before the listing is marked done)."""
    pending = set(range(len(scopes)))
    synced = asyncio.Event()

    def mark(index: int) -> None:
        pending.discard(index)
        if not pending:
            synced.set()

    for index, (resource, ns, selector) in enumerate(scopes):
        def on_synced(index: int = index) -> None:
            loop.call_soon_threadsafe(mark, index)

        watcher = Watcher(kube, resource, namespace=ns, selector=selector,
                          callback=handlers[resource],  # type: ignore[arg-type]
                          synced=on_synced, page=SECRET_PAGE if resource == SECRETS else PAGE)
        watchers.append(watcher)
        threading.Thread(target=watcher.run, name=f"watch-{resource.plural}-{ns or 'all'}{'' if selector else '-all'}",
                         daemon=True).start()
    await asyncio.wait_for(synced.wait(), timeout=timing.SYNC_TIMEOUT)


async def _list_providers(engine: Engine) -> list[RawBody]:
    for attempt in itertools.count(1):
        try:
            return await engine.kube.list_providers()
        except TransientError as e:  # e.g. 429 "storage is (re)initializing" after a CRD install
            wait = timing.listing_retry(attempt, retry_after=e.retry_after)
            log.info("cannot list ExternalAuthProviders yet (%s); retrying in %.1fs", e, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
