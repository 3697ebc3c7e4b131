"""Every write of a token Secret: the claim, its release, the compare-and-swap persist
of new tokens (shielded: cancellation and shutdown do not interrupt it), and the
output-format keys. Writes carry the ``resourceVersion`` they were based on; the cache
is updated from each answer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Mapping

from externalauth import metrics
from externalauth.engine.background import Background
from externalauth.engine.caches import Caches
from externalauth.engine.ports import Clock, KubePort
from externalauth.errors import (
    ConflictError,
    ExternalAuthError,
    NotFoundError,
    RejectedError,
)
from externalauth.model import bodies, claims
from externalauth.model import tokens as tokmod
from externalauth.model.bodies import RawBody
from externalauth.model.names import CLAIM_ANNOTATION, DEAD_GRANT_ANNOTATION, LinkKey
from externalauth.model.secure import SecretStr
from externalauth.policy import timing

log = logging.getLogger(__name__)

#: Writes tried to mark a dead grant on a Secret that others edit meanwhile (409s).
_DEAD_MARK_ATTEMPTS = 3


def _uid(secret: RawBody | None) -> str:
    """The Secret's uid, the salt of its dead-grant mark (the same on the write and the read)."""
    uid = ((secret or {}).get("metadata") or {}).get("uid", "")
    return uid if isinstance(uid, str) else ""


class ClaimState(enum.Enum):
    CLAIMED = "claimed"  # ours, with ``body`` the Secret as written
    CHANGED = "changed"  # the Secret no longer holds the refresh token: decide again
    HELD_ELSEWHERE = "held-elsewhere"  # another replica holds a live claim until ``until``
    RACED = "raced"  # the write lost a race (409) or the Secret is gone: decide again
    FAILED = "failed"  # the write failed: ``message`` says why


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    state: ClaimState
    body: RawBody | None = None
    claim: claims.Claim | None = None
    message: str = ""


class PersistOutcome(enum.Enum):
    PERSISTED = "persisted"
    SUPERSEDED = "superseded"  # someone stored a newer refresh token: theirs wins
    # The new tokens could not be stored, for good: retrying cannot help (contract §3).
    LOST_GONE = "lost-gone"  # the Secret was deleted (404)
    LOST_INVALID = "lost-invalid"  # the API server refused the write (422: immutable, too big)


class SecretWriter:
    def __init__(self, *, kube: KubePort, caches: Caches, clock: Clock, holder: str,
                 claim_lease: float) -> None:
        self._kube = kube
        self._caches = caches
        self._clock = clock
        self.holder = holder
        self._lease = claim_lease
        self._locks: dict[LinkKey, asyncio.Lock] = {}
        self._users: collections.Counter[LinkKey] = collections.Counter()
        self._inflight = Background()  # persists: not interrupted, drained at shut-down

    @contextlib.asynccontextmanager
    async def lock(self, key: LinkKey) -> AsyncIterator[None]:
        """One refresh (or format write) per Secret at a time, whatever link asks. A lock
        lives only while someone holds or waits for it (10,000s of Secrets, few busy)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def waiting(self, key: LinkKey) -> int:
        """How many refreshes (or format writes) of Secret ``key`` hold or wait for its lock."""
        return self._users[key]

    def claim_of(self, secret: RawBody | None) -> claims.Claim | None:
        return claims.parse(bodies.annotation(secret, CLAIM_ANNOTATION),
                            now=self._clock.now().timestamp(), max_lease=self._lease)

    @staticmethod
    def marked_dead(secret: RawBody | None, refresh_token: SecretStr | None) -> bool:
        """Does the Secret say (``externalauth.io/dead-grant``) that the provider refused this
        very refresh token?"""
        return claims.marked_dead(bodies.annotation(secret, DEAD_GRANT_ANNOTATION), refresh_token,
                                  secret_uid=_uid(secret))

    def tokens_of(self, key: LinkKey, secret: RawBody | None) -> tokmod.TokenSet | None:
        """The tokens the Secret ``key`` holds in ``secret`` (the cached copy or a fresh
        read), None if they are unusable: parsed once per data (:meth:`Caches.secret_tokens`)."""
        return self._caches.secret_tokens(key, secret)[0] if secret is not None else None

    def lease_left(self, secret: RawBody | None) -> float:
        return claims.lease_left(self.claim_of(secret), holder=self.holder,
                                 now=self._clock.now().timestamp())

    # --- claim ------------------------------------------------------------------------
    async def claim(self, key: LinkKey, consumed: SecretStr, *, keep: RawBody | None = None,
                    keep_above: float = 0.0) -> ClaimResult:
        """Take the cross-replica claim on the Secret: a write preconditioned on the
        ``resourceVersion`` of the cached copy, so two replicas cannot both win. ``keep``:
        the Secret as our own claim left it, kept as it is (no write) while that claim has
        more than ``keep_above`` seconds of lease left."""
        if keep is not None and self.lease_left(keep) > keep_above:
            return ClaimResult(ClaimState.CLAIMED, body=keep, claim=self.claim_of(keep))
        secret = self._caches.secrets.get(key)
        current = self.tokens_of(key, secret)
        if current is None or current.refresh_token != consumed or self.marked_dead(secret, consumed):
            return ClaimResult(ClaimState.CHANGED)  # a dead grant: another replica was refused
        now = self._clock.now().timestamp()
        held = self.claim_of(secret)
        if claims.held_elsewhere(held, holder=self.holder, now=now):
            log.info("Secret %s/%s is being refreshed by another replica; waiting", *key)
            return ClaimResult(ClaimState.HELD_ELSEWHERE, claim=held)
        mine = claims.Claim(holder=self.holder, until=now + self._lease)
        try:
            body = await self._kube.patch_secret(
                *key, {"metadata": {"annotations": {CLAIM_ANNOTATION: mine.render()}}},
                resource_version=bodies.resource_version(secret))
        except ConflictError:
            await self.reread(key)
            return ClaimResult(ClaimState.RACED)
        except NotFoundError:
            self._caches.forget_secret(key)
            return ClaimResult(ClaimState.RACED)
        except ExternalAuthError as e:
            return ClaimResult(ClaimState.FAILED, message=f"cannot claim the Secret for refresh: {e}")
        self._caches.store_secret(body)
        return ClaimResult(ClaimState.CLAIMED, body=body, claim=mine)

    async def release(self, key: LinkKey, *, dead: SecretStr | None = None) -> None:
        """Drop our claim after a refresh that stored nothing (its lease would end anyway).

        ``dead``: the refresh token the provider refused. The same write marks it dead on
        the Secret (``externalauth.io/dead-grant``, a salted digest): every claim is a
        compare-and-swap on the Secret, so no replica can claim it again for that token
        without seeing the verdict (a verdict written after the release, in a link's status
        only, came too late for a replica waiting for the claim). After a 409 (an edit
        meanwhile) the Secret is read and the write redone, without the mark if the Secret
        holds a new refresh token by then."""
        secret = self._caches.secrets.get(key)
        for _ in range(_DEAD_MARK_ATTEMPTS if dead is not None else 1):
            held = self.claim_of(secret)
            annotations: dict[str, str | None] = {}
            if held is not None and held.holder == self.holder:
                annotations[CLAIM_ANNOTATION] = None
            current = self.tokens_of(key, secret) if dead is not None else None
            if dead is not None and secret is not None and current is not None and current.refresh_token == dead:
                # (a new refresh token stored meanwhile by another writer is not dead)
                annotations[DEAD_GRANT_ANNOTATION] = claims.dead_grant_digest(dead, secret_uid=_uid(secret))
            if not annotations:
                return
            try:
                body = await self._kube.patch_secret(*key, {"metadata": {"annotations": annotations}},
                                                     resource_version=bodies.resource_version(secret))
            except ConflictError:
                if dead is None:
                    return  # the lease runs out by itself
                metrics.SECRET_WRITE_CONFLICTS.inc()
                secret = await self.reread(key)
                continue
            except ExternalAuthError:
                return  # the lease runs out by itself (and the status carries the verdict)
            self._caches.store_secret(body)
            return

    async def replaced(self, key: LinkKey, consumed: SecretStr) -> bool:
        """A fresh read: does the Secret now hold another refresh token than ``consumed``
        (another writer refreshed it)?"""
        fresh = self.tokens_of(key, await self.reread(key))
        return fresh is not None and fresh.refresh_token != consumed

    async def reread(self, key: LinkKey) -> RawBody | None:
        """A fresh read of the Secret into the cache (the cache on failure)."""
        try:
            body = await self._kube.get_secret(*key)
        except ExternalAuthError as e:
            log.warning("cannot re-read Secret %s/%s: %s", key[0], key[1], e)
            return self._caches.secrets.get(key)
        if body is None:
            self._caches.forget_secret(key)
            return None
        self._caches.store_secret(body)
        return body

    # --- persist: not interruptible ---------------------------------------------------
    async def persist(self, key: LinkKey, *, base: RawBody, consumed: SecretStr,
                      data: Mapping[str, str | None]) -> PersistOutcome:
        """Write ``data`` (the new token keys) and drop our claim, compare-and-swap, until
        written or superseded. Runs in its own task: cancelling the caller does not stop it,
        and :meth:`drain` waits for it at shutdown."""
        task = self._inflight.start(self._persist(key, base=base, consumed=consumed, data=data),
                                    name=f"persist {key}")
        return await asyncio.shield(task)

    async def _persist(self, key: LinkKey, *, base: RawBody, consumed: SecretStr,
                       data: Mapping[str, str | None]) -> PersistOutcome:
        # New tokens drop our claim and any dead-grant mark (it named a token no longer held).
        patch = {"data": dict(data),
                 "metadata": {"annotations": {CLAIM_ANNOTATION: None, DEAD_GRANT_ANNOTATION: None}}}
        attempt = 0
        while True:
            attempt += 1
            try:
                body = await self._kube.patch_secret(*key, patch, urgent=True,
                                                     resource_version=bodies.resource_version(base))
            except ConflictError:
                metrics.SECRET_WRITE_CONFLICTS.inc()
                try:
                    fresh = await self._kube.get_secret(*key, urgent=True)
                except ExternalAuthError:
                    await self._clock.sleep(timing.reread_retry(attempt))
                    continue
                if fresh is None:
                    log.error("Secret %s/%s was deleted while its token was refreshed; "
                              "the new token could not be stored", *key)
                    self._caches.forget_secret(key)
                    return PersistOutcome.LOST_GONE
                stored = self.tokens_of(key, fresh)
                if stored is not None and stored.refresh_token is not None \
                        and stored.refresh_token != consumed:
                    self._caches.store_secret(fresh)
                    return PersistOutcome.SUPERSEDED
                base = fresh  # an unrelated edit: re-apply our tokens on the new version
                continue
            except NotFoundError:
                # Believed only when a read agrees: a restarting API server must not make
                # the operator drop a token it holds.
                try:
                    gone = await self._kube.get_secret(*key, urgent=True) is None
                except ExternalAuthError:
                    gone = False
                if not gone:
                    await self._clock.sleep(timing.persist_retry(attempt))
                    continue
                log.error("Secret %s/%s was deleted while its token was refreshed; "
                          "the new token could not be stored", *key)
                self._caches.forget_secret(key)
                return PersistOutcome.LOST_GONE
            except RejectedError as e:
                log.error("Secret %s/%s cannot take the new token (%s); it could not be stored",
                          key[0], key[1], e)
                return PersistOutcome.LOST_INVALID
            except ExternalAuthError as e:
                wait = timing.persist_retry(attempt)
                log.warning("persisting Secret %s/%s failed (%s); retrying in %.1fs",
                            key[0], key[1], e, wait)
                await self._clock.sleep(wait)
                continue
            self._caches.store_secret(body)
            if attempt > 1:
                log.info("persisted Secret %s/%s after %d attempts", *key, attempt)
            return PersistOutcome.PERSISTED

    # --- output formats ----------------------------------------------------------------
    async def write_formats(self, key: LinkKey, *, access_token: SecretStr,
                            data: Mapping[str, str | None]) -> None:
        """(Re)write format keys, if the Secret still holds ``access_token``."""
        async with self.lock(key):
            secret = self._caches.secrets.get(key)
            current = self.tokens_of(key, secret)
            if current is None or current.access_token != access_token:
                return  # changed meanwhile: the engine decides again
            try:
                body = await self._kube.patch_secret(*key, {"data": dict(data)},
                                                     resource_version=bodies.resource_version(secret))
                self._caches.store_secret(body)
            except ConflictError:
                metrics.SECRET_WRITE_CONFLICTS.inc()
                await self.reread(key)
            except ExternalAuthError as e:
                log.warning("cannot write output formats into Secret %s/%s: %s", *key, e)

    async def drain(self, *, grace: float) -> None:
        if self._inflight:
            log.info("waiting for %d token write(s) to land", len(self._inflight))
            await self._inflight.wait(timeout=grace)
