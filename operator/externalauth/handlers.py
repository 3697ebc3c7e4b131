"""kopf wiring only: each handler hands the raw object to the engine."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any

import kopf

from externalauth import GROUP, VERSION, metrics
from externalauth.engine.core import Engine, Settings
from externalauth.errors import TransientError
from externalauth.kube import connecting
from externalauth.kube.requesting import Kube
from externalauth.kube.watching import SecretWatcher
from externalauth.model.names import MANAGED_LABEL

log = logging.getLogger("externalauth")


class Options:
    """Set by :mod:`externalauth.runner` before kopf starts."""

    namespaces: list[str] = []
    kubeconfig: str | None = None
    context: str | None = None
    metrics_port: int = 0
    settings: Settings = Settings()
    engine: Engine | None = None
    watchers: list[SecretWatcher] = []
    scheduler_task: asyncio.Task[None] | None = None


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials (and --context) as our own client."""
    config = connecting.load_config(kubeconfig=Options.kubeconfig, context=Options.context)
    ca = config.cluster.get("certificate-authority")
    cert = config.user.get("client-certificate")
    key = config.user.get("client-key")
    return kopf.ConnectionInfo(
        server=config.cluster["server"],
        ca_path=ca.filename() if ca else None,
        insecure=config.cluster.get("insecure-skip-tls-verify"),
        token=config.user.get("token"),
        certificate_path=cert.filename() if cert else None,
        private_key_path=key.filename() if key else None,
        default_namespace=config.namespace,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="externalauth.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="externalauth.io", key="last-handled-configuration")
    settings.posting.enabled = False  # our own events only, never log lines as events
    # No scanning of namespaces and CRDs: the resources are known and the namespaces
    # explicit, so the operator needs no RBAC on namespaces or CRDs (deploy/rbac.yaml).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    for name in ("requests_oauthlib", "oauthlib", "urllib3", "kubernetes.client.rest"):
        logging.getLogger(name).setLevel(logging.WARNING)

    kube = Kube(connecting.connect(kubeconfig=Options.kubeconfig, context=Options.context))
    engine = Engine(kube, settings=Options.settings)
    Options.engine = engine
    loop = asyncio.get_running_loop()

    # Providers first (few objects), so links never flap to ProviderNotFound at start.
    for attempt in itertools.count(1):
        try:
            providers = await engine._io(kube.list_providers)
            break
        except TransientError as e:  # e.g. 429 "storage is (re)initializing" after a CRD install
            wait = min(10.0, e.retry_after or 0.5 * attempt)
            log.info("cannot list ExternalAuthProviders yet (%s); retrying in %.1fs", e, wait)
            await asyncio.sleep(wait)
    for item in providers:
        await engine.on_provider("ADDED", item)

    # Then the labelled Secrets: the scheduler waits for their first listing, so that
    # links are decided from the cache and not by one read each.
    scopes: list[str | None] = list(Options.namespaces) or [None]
    pending = {ns or "" for ns in scopes}
    synced = asyncio.Event()

    def mark(ns: str) -> None:
        pending.discard(ns)
        if not pending:
            synced.set()

    def deliver(kind: str, obj: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(engine.on_secret, kind, obj)

    for ns in scopes:
        def on_synced(ns: str = ns or "") -> None:
            loop.call_soon_threadsafe(mark, ns)

        watcher = SecretWatcher(kube, namespace=ns, selector=f"{MANAGED_LABEL}=true",
                                callback=deliver, synced=on_synced)
        Options.watchers.append(watcher)
        threading.Thread(target=watcher.run, name=f"secret-watch-{ns or 'all'}", daemon=True).start()
    await asyncio.wait_for(synced.wait(), timeout=300)
    Options.scheduler_task = loop.create_task(engine.scheduler.run(), name="scheduler")
    engine.scheduler.start()
    if Options.metrics_port:
        metrics.serve(Options.metrics_port)
    log.info("externalauth operator started (holder %s)", engine.holder)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for watcher in Options.watchers:
        watcher.stop()
    if Options.engine is not None:
        await Options.engine.drain()
    if Options.scheduler_task is not None:
        Options.scheduler_task.cancel()
    log.info("externalauth operator stopped")


@kopf.on.event(GROUP, VERSION, "externalauthlinks")  # type: ignore[arg-type]
async def link_event(event: dict[str, Any], **_: Any) -> None:
    # async on purpose: kopf runs sync handlers in worker threads, and the engine's caches
    # and scheduler belong to the event loop (a sync handler stalled 10,000 links).
    if Options.engine is not None:
        Options.engine.on_link(event.get("type") or "ADDED", dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "externalauthproviders")  # type: ignore[arg-type]
async def provider_event(event: dict[str, Any], **_: Any) -> None:
    if Options.engine is not None:
        await Options.engine.on_provider(event.get("type") or "ADDED", dict(event["object"]))
