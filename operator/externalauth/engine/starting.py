"""Start-up and shut-down of the engine inside kopf: the real ports, providers first,
then the labelled Secrets' first listing, then the scheduler and the metrics listener."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from externalauth import metrics
from externalauth.engine.core import Engine
from externalauth.engine.ports import ProviderPort
from externalauth.engine.settings import Settings
from externalauth.engine.threads import ThreadedKube, ThreadedProvider, run_blocking
from externalauth.errors import TransientError
from externalauth.kube import connecting
from externalauth.kube.requesting import Kube
from externalauth.kube.watching import SecretWatcher
from externalauth.model.bodies import RawBody
from externalauth.model.names import PROVIDER_LABEL
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.oauth.exchanging import ProviderClient

log = logging.getLogger("externalauth")
#: Longest wait for the first listing of the labelled Secrets.
SYNC_TIMEOUT = 300.0


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
    watchers: list[SecretWatcher]
    scheduler_task: asyncio.Task[None]
    pools: list[ThreadPoolExecutor]

    async def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        await self.engine.drain()
        self.scheduler_task.cancel()
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


async def start(options: Options) -> Running:
    settings = options.settings
    kube = Kube(connecting.connect(kubeconfig=options.kubeconfig, context=options.context))
    api_pool = ThreadPoolExecutor(settings.api_threads, thread_name_prefix="externalauth-api")
    provider_pool = ThreadPoolExecutor(settings.provider_threads, thread_name_prefix="externalauth-provider")

    async def make_client(spec: ProviderSpec, secret: SecretStr | None) -> ProviderPort:
        # In the provider pool: the constructor may run OIDC discovery (network I/O).
        client = await run_blocking(provider_pool, ProviderClient, spec, secret, observe=metrics.observer(spec.name),
                                    connect_timeout=settings.connect_timeout,
                                    read_timeout=settings.read_timeout,
                                    deadline=settings.provider_deadline)
        return ThreadedProvider(client, provider_pool)

    engine = Engine(ThreadedKube(kube, api_pool), make_client=make_client, settings=settings)
    loop = asyncio.get_running_loop()

    # Providers first (few objects), so links never flap to ProviderNotFound at start.
    for item in await _list_providers(engine):
        await engine.on_provider("ADDED", item)

    # Then the Secrets: opted-in token Secrets (server-side label selector) in the served
    # namespaces, and every Secret of the operator's own namespace (client secrets). The
    # scheduler waits for their first listing, so that links are decided from the cache
    # and not by one read each.
    served: list[str | None] = list(options.namespaces) or [None]
    scopes: list[tuple[str | None, str]] = [(ns, PROVIDER_LABEL) for ns in served]
    scopes.append((settings.operator_namespace, ""))
    pending = set(range(len(scopes)))
    synced = asyncio.Event()

    def mark(index: int) -> None:
        pending.discard(index)
        if not pending:
            synced.set()

    def deliver(kind: str, obj: RawBody) -> None:
        loop.call_soon_threadsafe(engine.on_secret, kind, obj)

    watchers = []
    for index, (ns, selector) in enumerate(scopes):
        def on_synced(index: int = index) -> None:
            loop.call_soon_threadsafe(mark, index)

        watcher = SecretWatcher(kube, namespace=ns, selector=selector,
                                callback=deliver, synced=on_synced)  # type: ignore[arg-type]
        watchers.append(watcher)
        threading.Thread(target=watcher.run, name=f"secret-watch-{ns or 'all'}{'' if selector else '-own'}",
                         daemon=True).start()
    await asyncio.wait_for(synced.wait(), timeout=SYNC_TIMEOUT)
    scheduler_task = loop.create_task(engine.scheduler.run(), name="scheduler")
    engine.scheduler.start()
    if options.metrics_port:
        metrics.serve(options.metrics_port, options.metrics_address)
    log.info("externalauth operator started (holder %s, shard %s)", engine.holder, settings.shard)
    return Running(engine=engine, watchers=watchers, scheduler_task=scheduler_task,
                   pools=[api_pool, provider_pool])


async def _list_providers(engine: Engine) -> list[RawBody]:
    for attempt in itertools.count(1):
        try:
            return await engine.kube.list_providers()
        except TransientError as e:  # e.g. 429 "storage is (re)initializing" after a CRD install
            wait = min(10.0, e.retry_after or 0.5 * attempt)
            log.info("cannot list ExternalAuthProviders yet (%s); retrying in %.1fs", e, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
