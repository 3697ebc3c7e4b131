"""Revocation on deletion (contract §2 ``revokeOnDelete``, §9.17): the finalizer
``externalauth.io/revoke`` on links that ask for it, and, when such a link is deleted,
one revocation of its grant at the provider before the finalizer goes.

Best effort and bounded: the finalizer is removed after a revocation, a definite refusal,
a provider type without revocation, or ``Settings.revocation_deadline`` of failed
attempts (a namespace deletion never hangs on a provider). Every outcome is an event
(``Revoked`` / ``RevocationFailed``, the latter saying what to do by hand) and a metric.
Across replicas the Secret's claim protects the grant as it protects a refresh: one
revocation per grant, and no refresh racing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from externalauth import metrics
from externalauth.engine.caches import Caches
from externalauth.engine.ports import Clock, KubePort
from externalauth.engine.provider_states import Providers
from externalauth.engine.recording import Recorder
from externalauth.engine.settings import Settings
from externalauth.engine.writing import ClaimState, SecretWriter
from externalauth.errors import ConflictError, ExternalAuthError, InvalidInputError, NotFoundError
from externalauth.model import bodies
from externalauth.model.bodies import RawBody
from externalauth.model.durations import parse_time
from externalauth.model.names import PROVIDER_LABEL, REVOKE_FINALIZER, LinkKey
from externalauth.model.reasons import EventReason
from externalauth.model.specs import LinkSpec
from externalauth.policy import revocations, timing
from externalauth.policy.revocations import Verdict

log = logging.getLogger(__name__)



class Revoker:
    def __init__(self, *, kube: KubePort, caches: Caches, writer: SecretWriter, providers: Providers,
                 recorder: Recorder, clock: Clock, settings: Settings) -> None:
        self._kube = kube
        self._caches = caches
        self._writer = writer
        self._providers = providers
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._attempts: dict[LinkKey, int] = {}  # failed attempts so far, per deleted link
        #: Links whose revocation has ended (reported) while their finalizer may still be
        #: on them: never revoked or reported twice, whatever triggers another look.
        self._ended: set[LinkKey] = set()

        #: Token Secrets deleted while a link that revokes on deletion still needed them
        #: (a namespace being deleted takes the Secret and the link at once): their last
        #: cached copy, kept in memory only until that link is gone.
        self._orphans: dict[LinkKey, RawBody] = {}

    def forget(self, key: LinkKey) -> None:
        self._attempts.pop(key, None)
        self._ended.discard(key)
        self._orphans = {k: v for k, v in self._orphans.items() if self._needed(k)}

    def secret_deleted(self, key: LinkKey, cached: RawBody | None) -> None:
        """A token Secret is gone: keep what it held if a link with our finalizer reads it."""
        if cached is not None and self._needed(key):
            self._orphans[key] = cached

    def _needed(self, secret: LinkKey) -> bool:
        for link in self._caches.links_of_secret(secret):
            meta = (self._caches.links.get(link) or {}).get("metadata") or {}
            if REVOKE_FINALIZER in (meta.get("finalizers") or []):
                return True
        return False

    async def handle(self, key: LinkKey) -> tuple[bool, dt.datetime | None]:
        """Finalizer bookkeeping and revocation for the link ``key``, before it is decided.
        Returns (done, when to look again): ``done`` means the link needs nothing else now
        (it is being deleted, or its finalizers were just changed)."""
        body = self._caches.links.get(key)
        if body is None:
            return True, None
        meta = body.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if isinstance(f, str)]
        ours = REVOKE_FINALIZER in finalizers
        if meta.get("deletionTimestamp"):
            if not ours:
                return True, None  # going away; nothing of ours to do
            return True, await self._finalize(key, body, finalizers)
        spec = self._caches.link_spec(key, body)[0]
        wanted = spec.revoke_on_delete if spec is not None else ours  # a bad spec says nothing new
        if wanted == ours:
            return False, None
        changed = [*finalizers, REVOKE_FINALIZER] if wanted else [f for f in finalizers if f != REVOKE_FINALIZER]
        if not await self._set_finalizers(key, body, changed):
            return True, self._clock.now() + timing.RETRY_SOON
        return False, None

    async def _set_finalizers(self, key: LinkKey, body: RawBody, finalizers: list[str]) -> bool:
        try:
            written = await self._kube.patch_link_finalizers(
                *key, finalizers, resource_version=bodies.resource_version(body))
        except ConflictError:
            return False  # the watch brings the newer link; decided again then
        except NotFoundError:
            return True
        except ExternalAuthError as e:
            log.warning("cannot write the finalizers of ExternalAuthLink %s/%s: %s", key[0], key[1], e)
            return False
        self._caches.store_link(written)
        return True

    # --- deletion ---------------------------------------------------------------------
    async def _finalize(self, key: LinkKey, body: RawBody, finalizers: list[str]) -> dt.datetime | None:
        spec = self._caches.link_spec(key, body)[0]
        provider = spec.provider_name if spec is not None else ""
        if key in self._ended:  # revoked or given up already: only the finalizer is left
            if not await self._set_finalizers(key, body, [f for f in finalizers if f != REVOKE_FINALIZER]):
                return self._clock.now() + timing.RETRY_SOON
            return None
        deleted_at = _time((body.get("metadata") or {}).get("deletionTimestamp"))
        now = self._clock.now()
        young = deleted_at is None or now - deleted_at < timing.REVOCATION_PROVIDER_GRACE
        outcome, retry_after = await self._revoke(key, spec, young=young)
        if outcome.verdict is Verdict.TRANSIENT:
            attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
            if deleted_at is None or now - deleted_at < dt.timedelta(seconds=self._settings.revocation_deadline):
                wait = timing.revocation_retry(attempt=attempts, retry_after=retry_after)
                log.info("ExternalAuthLink %s/%s: revocation not done yet (%s); trying again in %.0fs",
                         key[0], key[1], outcome.message, wait)
                return now + dt.timedelta(seconds=wait)
            outcome = revocations.Outcome(Verdict.REFUSED, (
                f"the provider could not be reached for {self._settings.revocation_deadline:g}s "
                f"({outcome.message}); {self._manual(spec)}"))
        self._report(key, provider, outcome)
        self._ended.add(key)
        self._attempts.pop(key, None)
        if not await self._set_finalizers(key, body, [f for f in finalizers if f != REVOKE_FINALIZER]):
            return now + timing.RETRY_SOON  # the link changed meanwhile: only the finalizer is left to do
        return None

    def _manual(self, spec: LinkSpec | None) -> str:
        runtime = self._providers.get(spec.provider_name) if spec is not None else None
        manual = runtime.spec.quirks.manual_revocation if runtime is not None and runtime.spec is not None \
            else "the provider's page of authorized applications"
        return revocations.manual_step(manual)

    async def _revoke(self, key: LinkKey, spec: LinkSpec | None, *,
                      young: bool) -> tuple[revocations.Outcome, float | None]:
        """One attempt: (outcome, the provider's Retry-After). ``young``: the deletion is
        recent, so a provider not known yet may still arrive (its watch lags the link's)."""
        if spec is None:
            return revocations.Outcome(Verdict.REFUSED, "the link's spec is invalid, so its grant is unknown"), None
        runtime = self._providers.get(spec.provider_name)
        if runtime is None or runtime.spec is None:
            return revocations.Outcome(Verdict.TRANSIENT if young else Verdict.REFUSED, (
                f"ExternalAuthProvider {spec.provider_name} is not there or not valid")), None
        quirks = runtime.spec.quirks
        manual = revocations.manual_step(quirks.manual_revocation)
        if not runtime.spec.allows(self._caches.namespaces.get(key[0])):
            # spec.namespaceSelector: no token of this namespace is ever sent to the provider.
            return revocations.Outcome(Verdict.REFUSED, (
                f"ExternalAuthProvider {spec.provider_name} does not serve this namespace "
                f"(namespaceSelector), so no token is sent to it: {manual}")), None
        client = runtime.client
        if client is None:
            return revocations.Outcome(Verdict.TRANSIENT, f"ExternalAuthProvider {spec.provider_name} is not "
                                                          f"ready: {runtime.message}"), None
        if client.spec.revocation_url is None and not client.spec.discover_revocation:
            return revocations.Outcome(Verdict.UNSUPPORTED, (
                f"provider {spec.provider_name} (type {client.spec.type}) has no revocation endpoint: "
                f"{manual}")), None
        secret_key = (key[0], spec.secret_name)
        secret = self._caches.secrets.get(secret_key)
        if secret is None and secret_key not in self._orphans:
            # The cache keeps only Secrets a link has read (contract §9.16): one read here.
            secret = await self._writer.reread(secret_key)
        orphan = secret is None and secret_key in self._orphans
        if orphan:
            secret = self._orphans[secret_key]
        if secret is None or bodies.labels_of(secret).get(PROVIDER_LABEL) != spec.provider_name:
            return revocations.Outcome(Verdict.REFUSED, (
                f"the Secret {spec.secret_name} is gone or not opted in, so no token is left to revoke "
                f"with: {manual}")), None
        tokens = self._writer.tokens_of(secret_key, secret)
        if tokens is None:
            return revocations.Outcome(Verdict.REFUSED, (
                f"the Secret {spec.secret_name} holds no usable token: {manual}")), None
        async with self._writer.lock(secret_key):
            held = None
            if tokens.refresh_token is not None and not orphan:  # no claim on a Secret that is gone
                claimed = await self._writer.claim(secret_key, tokens.refresh_token)
                if claimed.state is ClaimState.HELD_ELSEWHERE:
                    held = claimed.claim
                elif claimed.state is not ClaimState.CLAIMED:
                    return revocations.Outcome(Verdict.TRANSIENT, claimed.message or "the Secret changed"), None
            if held is not None:
                wait = max(1.0, held.until - self._clock.now().timestamp())
                return revocations.Outcome(Verdict.TRANSIENT, "another replica holds the Secret's claim"), wait
            outcome = await client.revoke(refresh_token=tokens.refresh_token, access_token=tokens.access_token,
                                          now=self._clock.now())
            if outcome.verdict is Verdict.TRANSIENT:
                await self._writer.release(secret_key)
            # Revoked or refused: the claim stays until its lease ends, so that no replica
            # exchanges or revokes the same grant while the link goes away.
        if outcome.verdict in (Verdict.REFUSED, Verdict.UNSUPPORTED):
            outcome = dataclasses.replace(outcome, message=f"{outcome.message}; {manual}")
        return outcome, outcome.retry_after

    def _report(self, key: LinkKey, provider: str, outcome: revocations.Outcome) -> None:
        if outcome.verdict is Verdict.REVOKED:
            metrics.child(metrics.REVOCATIONS, provider, "revoked").inc()
            log.info("ExternalAuthLink %s/%s: %s (provider %s)", key[0], key[1], outcome.message, provider)
            self._recorder.event(key, "Normal", EventReason.REVOKED, f"{outcome.message} (provider {provider})")
            return
        result = "unsupported" if outcome.verdict is Verdict.UNSUPPORTED else "failed"
        metrics.child(metrics.REVOCATIONS, provider, result).inc()
        log.warning("ExternalAuthLink %s/%s: the grant was not revoked: %s", key[0], key[1], outcome.message)
        self._recorder.event(key, "Warning", EventReason.REVOCATION_FAILED,
                             f"the grant was not revoked: {outcome.message}")


def _time(value: object) -> dt.datetime | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except InvalidInputError:
        return None
