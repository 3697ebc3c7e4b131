"""What the outside world sees of a link: its status (written only on change), its
events (posted in the background, never on the refresh path) and its gauges."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging

from externalauth import metrics
from externalauth.engine.background import Background
from externalauth.engine.caches import Caches
from externalauth.engine.ports import Clock, KubePort
from externalauth.errors import ConflictError, ExternalAuthError, NotFoundError
from externalauth.model import conditions as cond
from externalauth.model.bodies import RawBody
from externalauth.model.names import LinkKey
from externalauth.model.reasons import ConditionType, EventReason, ReadyReason, Status
from externalauth.policy import deciding

log = logging.getLogger(__name__)

#: Ready reasons that mean the user's input is bad: worth an InvalidInput event.
_BAD_INPUT = frozenset({ReadyReason.SECRET_NOT_FOUND, ReadyReason.SECRET_INVALID,
                        ReadyReason.PROVIDER_NOT_FOUND, ReadyReason.PROVIDER_NOT_READY,
                        ReadyReason.INVALID_SPEC})


class Written(enum.Enum):
    UNCHANGED = "unchanged"
    WRITTEN = "written"
    GONE = "gone"  # the link was deleted meanwhile
    STALE = "stale"  # the link changed since we read it (another replica wrote): decide again
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class StatusWrite:
    result: Written
    body: RawBody | None = None  # the link as written


class Recorder:
    def __init__(self, *, kube: KubePort, caches: Caches, clock: Clock) -> None:
        self._kube = kube
        self._caches = caches
        self._clock = clock
        self._ready_gauge: dict[LinkKey, tuple[str, str]] = {}
        self.background = Background()  # events being posted

    # --- status -----------------------------------------------------------------------
    async def write_status(self, key: LinkKey, *, body: RawBody, plan: deciding.Plan,
                           now: dt.datetime, generation: int) -> StatusWrite:
        if plan.hold_status:
            return StatusWrite(Written.UNCHANGED)
        existing = body.get("status") or {}
        new = deciding.render_status(plan, existing=existing, now=now, generation=generation)
        if new == existing:
            return StatusWrite(Written.UNCHANGED)
        patch: dict[str, object] = dict(new)
        for gone in set(existing) - set(new):
            patch[gone] = None
        try:
            # Compare-and-swap: a status decided from a stale copy of the link (another
            # replica wrote since) is not written over the newer one, whose watch event
            # brings the link back to be decided again (no back-and-forth between replicas).
            updated = await self._kube.patch_link_status(
                key[0], key[1], patch, resource_version=(body.get("metadata") or {}).get("resourceVersion"))
        except NotFoundError:
            return StatusWrite(Written.GONE)
        except ConflictError:
            return StatusWrite(Written.STALE)
        except ExternalAuthError as e:
            log.warning("cannot write status of ExternalAuthLink %s/%s: %s", key[0], key[1], e)
            return StatusWrite(Written.FAILED)
        old_ready = cond.find(existing.get("conditions") or [], ConditionType.READY)
        ready = cond.find(new["conditions"], ConditionType.READY)
        if ready and ready.get("status") == Status.FALSE and ready.get("reason") in _BAD_INPUT and (
            old_ready is None or old_ready.get("reason") != ready.get("reason")
        ):
            self.event(key, "Warning", EventReason.INVALID_INPUT,
                       f"{ready.get('reason')}: {ready.get('message')}")
        return StatusWrite(Written.WRITTEN, updated)

    # --- gauges -----------------------------------------------------------------------
    def gauges(self, key: LinkKey, *, provider: str, ready: bool,
               expiry: dt.datetime | None) -> None:
        label = (provider, "true" if ready else "false")
        previous = self._ready_gauge.get(key)
        if previous != label:
            if previous is not None:
                metrics.child(metrics.LINKS, *previous).dec()
            metrics.child(metrics.LINKS, *label).inc()
            self._ready_gauge[key] = label
        if expiry is not None:
            metrics.TOKEN_EXPIRY.labels(key[0], key[1]).set(expiry.timestamp())

    def forget(self, key: LinkKey) -> None:
        previous = self._ready_gauge.pop(key, None)
        if previous is not None:
            metrics.child(metrics.LINKS, *previous).dec()
        try:
            metrics.TOKEN_EXPIRY.remove(key[0], key[1])
        except KeyError:
            pass

    # --- events -----------------------------------------------------------------------
    def event(self, key: LinkKey, type_: str, reason: EventReason, message: str) -> None:
        """Post an event in the background: it never delays the refresh path; shutdown
        waits for it like for a persist."""
        body = self._caches.links.get(key)
        if body is None:
            return
        obj: RawBody = {"apiVersion": body.get("apiVersion", ""),
                        "kind": body.get("kind", "ExternalAuthLink"),
                        "metadata": body.get("metadata", {})}

        async def post() -> None:
            try:
                await self._kube.post_event(obj, type_=type_, reason=reason.value,
                                            message=message, now=self._clock.now())
            except ExternalAuthError as e:
                log.info("cannot post event %s on %s/%s: %s", reason, key[0], key[1], e)

        self.background.start(post(), name=f"event {reason} {key}")

    async def drain(self, *, grace: float) -> None:
        await self.background.wait(timeout=grace)
