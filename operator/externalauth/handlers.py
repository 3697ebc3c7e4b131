"""kopf wiring only: each handler hands the raw object to the engine.

kopf runs the operator's lifecycle (start-up, clean-up on a signal, the liveness probe), its
login, and the watch of the providers (few objects); the links and Secrets, which are many
and whose events are mostly the echoes of our own writes, are watched by the engine's own
watch threads (:mod:`externalauth.engine.starting`). No handler detects changes, so kopf
stores no progress and no diff-base on any object. The operator's state travels in kopf's
memo (``kopf.run(memo=...)``), not in a global."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf

from externalauth import GROUP, VERSION
from externalauth.engine import starting
from externalauth.kube import kopf_login
from externalauth.policy import timing

log = logging.getLogger("externalauth")


@dataclasses.dataclass
class Operator:
    """What the handlers share: made by :mod:`externalauth.runner`, handed to kopf as the
    memo (each handler's ``memo.operator``; kopf's per-object copies of the memo are
    shallow, so they all hold this one), filled in at start-up."""

    options: starting.Options
    running: starting.Running | None = None


def memo(operator: Operator) -> kopf.Memo:
    return kopf.Memo(operator=operator)


def _operator(memo: Any) -> Operator:
    operator = memo.operator
    assert isinstance(operator, Operator)
    return operator


_login = kopf_login.KopfLogin()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials (and --context) as our own client: the same
    rotating token file or exec plugin, re-read or re-run when kopf's token is refused (401)
    or expires (an exec plugin's ``expirationTimestamp``)."""
    options = _operator(memo).options
    info = _login(kubeconfig=options.kubeconfig, context=options.context)
    return kopf.ConnectionInfo(**info.keywords())


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # our own events only, never log lines as events
    # No scanning of namespaces and CRDs: the resources are known and the namespaces
    # explicit, so the operator needs no RBAC on namespaces or CRDs (deploy/rbac.yaml).
    settings.scanning.disabled = True
    settings.watching.server_timeout = timing.KOPF_WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = timing.KOPF_WATCH_CLIENT_TIMEOUT
    operator = _operator(memo)
    operator.running = await starting.start(operator.options)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    running = _operator(memo).running
    if running is not None:
        await running.stop()
    log.info("externalauth operator stopped")


@kopf.on.event(GROUP, VERSION, "externalauthproviders")  # type: ignore[arg-type]
async def provider_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    running = _operator(memo).running
    if running is not None:
        await running.engine.on_provider(event.get("type") or "ADDED", dict(event["object"]))  # type: ignore[arg-type]
