"""kopf wiring only: each handler hands the raw object to the engine.

kopf watches the providers (few objects); the links and Secrets, which are many and whose
events are mostly the echoes of our own writes, are watched by the engine's own watch
threads (:mod:`externalauth.engine.starting`)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from externalauth import GROUP, VERSION
from externalauth.engine import starting
from externalauth.kube import connecting
from externalauth.policy import timing

log = logging.getLogger("externalauth")


class State:
    """Set by :mod:`externalauth.runner` before kopf starts; filled in at start-up."""

    options = starting.Options()
    running: starting.Running | None = None


_login = connecting.KopfLogin()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials (and --context) as our own client: the same
    rotating token file or exec plugin, re-read or re-run when kopf's token is refused (401)
    or expires (an exec plugin's ``expirationTimestamp``)."""
    info = _login(kubeconfig=State.options.kubeconfig, context=State.options.context)
    return kopf.ConnectionInfo(
        server=info.server,
        ca_path=info.ca_path,
        ca_data=info.ca_data,
        insecure=info.insecure,
        token=info.token,
        expiration=info.expiration,
        certificate_path=info.certificate_path,
        certificate_data=info.certificate_data,
        private_key_path=info.private_key_path,
        private_key_data=info.private_key_data,
        default_namespace=info.default_namespace,
        proxy_url=info.proxy_url,
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
    settings.watching.server_timeout = timing.KOPF_WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = timing.KOPF_WATCH_CLIENT_TIMEOUT
    State.running = await starting.start(State.options)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if State.running is not None:
        await State.running.stop()
    log.info("externalauth operator stopped")


@kopf.on.event(GROUP, VERSION, "externalauthproviders")  # type: ignore[arg-type]
async def provider_event(event: dict[str, Any], **_: Any) -> None:
    if State.running is not None:
        await State.running.engine.on_provider(event.get("type") or "ADDED", dict(event["object"]))  # type: ignore[arg-type]
