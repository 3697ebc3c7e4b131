"""kopf wiring only: each handler hands the raw object to the engine."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from externalauth import GROUP, VERSION
from externalauth.engine import starting
from externalauth.kube import connecting

log = logging.getLogger("externalauth")


class State:
    """Set by :mod:`externalauth.runner` before kopf starts; filled in at start-up."""

    options = starting.Options()
    running: starting.Running | None = None


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials (and --context) as our own client."""
    config = connecting.load_config(kubeconfig=State.options.kubeconfig, context=State.options.context)
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
    State.running = await starting.start(State.options)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if State.running is not None:
        await State.running.stop()
    log.info("externalauth operator stopped")


@kopf.on.event(GROUP, VERSION, "externalauthlinks")  # type: ignore[arg-type]
async def link_event(event: dict[str, Any], **_: Any) -> None:
    # async on purpose: kopf runs sync handlers in worker threads, and the engine's caches
    # and scheduler belong to the event loop (a sync handler stalled 10,000 links).
    if State.running is not None:
        State.running.engine.on_link(event.get("type") or "ADDED", dict(event["object"]))  # type: ignore[arg-type]


@kopf.on.event(GROUP, VERSION, "externalauthproviders")  # type: ignore[arg-type]
async def provider_event(event: dict[str, Any], **_: Any) -> None:
    if State.running is not None:
        await State.running.engine.on_provider(event.get("type") or "ADDED", dict(event["object"]))  # type: ignore[arg-type]
