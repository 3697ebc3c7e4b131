"""The engine: watch caches in, refreshes out.

gather (caches + memory) → decide (pure, :mod:`externalauth.policy.deciding`) → act
(claim → exchange → persist → validate) → record (status, events, metrics).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from externalauth import metrics
from externalauth.engine.scheduling import Scheduler
from externalauth.errors import (
    ConflictError,
    ExternalAuthError,
    InvalidInputError,
    NotFoundError,
)
from externalauth.kube.requesting import Kube
from externalauth.model import conditions as cond
from externalauth.model import formats
from externalauth.model import tokens as tokmod
from externalauth.model.durations import format_time
from externalauth.model.names import CLAIM_ANNOTATION, MANAGED_LABEL, REFRESH_ANNOTATION, LinkKey
from externalauth.model.reasons import (
    EventReason,
    ProviderReason,
    RefreshableReason,
    RefreshResult,
    Status,
    ValidatedReason,
)
from externalauth.model.secure import SecretStr
from externalauth.model.specs import LinkSpec, ProviderSpec, parse_link, parse_provider
from externalauth.oauth.exchanging import ProviderClient
from externalauth.policy import classifying, deciding, scheduling
from externalauth.policy.deciding import Action, Failure, LinkMemory, ProviderView, Validation

log = logging.getLogger(__name__)
T = TypeVar("T")

RT_EXPIRING_SOON = dt.timedelta(days=7)


@dataclasses.dataclass
class Settings:
    validation_interval: dt.timedelta = deciding.DEFAULT_VALIDATION_INTERVAL
    claim_lease: float = 60.0
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    missing_secret_recheck: float = 30.0
    threads: int = 64
    concurrency: int = 512
    shutdown_grace: float = 60.0
    connect_timeout: float = 5.0
    read_timeout: float = 20.0


@dataclasses.dataclass
class ProviderRuntime:
    name: str
    body: dict[str, Any]
    spec: ProviderSpec | None = None
    reason: ProviderReason = ProviderReason.INVALID_SPEC
    message: str = ""
    client: ProviderClient | None = None
    semaphore: asyncio.Semaphore | None = None  # K token calls in flight
    pipeline: asyncio.Semaphore | None = None  # 2K links between claim and exchange
    rejected_failures: int = 0
    rejected_until: dt.datetime | None = None
    secret_fp: str | None = None

    def view(self) -> ProviderView:
        if self.spec is None or self.reason in (
            ProviderReason.INVALID_SPEC, ProviderReason.CLIENT_SECRET_NOT_FOUND
        ):
            return ProviderView(spec=None, not_ready_message=self.message)
        return ProviderView(spec=self.spec, credentials_rejected_until=self.rejected_until)


def _rv(body: dict[str, Any] | None) -> str | None:
    value = (body or {}).get("metadata", {}).get("resourceVersion")
    return value if isinstance(value, str) else None


def _newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Is ``new`` at least as recent as ``old``? (resourceVersions are etcd revisions.)"""
    a, b = _rv(old), _rv(new)
    if old is None or a is None or b is None:
        return True
    try:
        return int(b) >= int(a)
    except ValueError:
        return True


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """The object without what the engine never reads (managedFields are often the largest
    part of an object): the caches hold 10,000s of links and Secrets."""
    meta = body.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return body


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Engine:
    def __init__(self, kube: Kube, *, settings: Settings | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.kube = kube
        self.settings = settings or Settings()
        self.clock = clock
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.links: dict[LinkKey, dict[str, Any]] = {}
        self.providers: dict[str, ProviderRuntime] = {}
        self.secrets: dict[LinkKey, dict[str, Any]] = {}
        self.memory: dict[LinkKey, LinkMemory] = {}
        self.links_by_secret: dict[LinkKey, set[LinkKey]] = collections.defaultdict(set)
        self.links_by_provider: dict[str, set[LinkKey]] = collections.defaultdict(set)
        self.providers_by_secret: dict[LinkKey, set[str]] = collections.defaultdict(set)
        self._secret_locks: dict[LinkKey, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._ready_gauge: dict[LinkKey, tuple[str, str]] = {}
        self._warned_rt: dict[LinkKey, str] = {}
        self._executor = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="externalauth")
        self.scheduler = Scheduler(self._reconcile_key, concurrency=self.settings.concurrency)
        self._inflight_persists: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # --- threads -------------------------------------------------------------------
    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # --- watch events in -----------------------------------------------------------
    def on_link(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self.links.get(key)
        if kind == "DELETED":
            self._unlink(key, old)
            self.links.pop(key, None)
            self.memory.pop(key, None)
            self.scheduler.forget(key)
            self._drop_gauges(key)
            return
        if old is not None and not _newer(old, body):
            return
        self._unlink(key, old)
        body = _slim(body)
        self.links[key] = body
        spec = body.get("spec") or {}
        if isinstance(spec.get("secretName"), str):
            self.links_by_secret[(key[0], spec["secretName"])].add(key)
        if isinstance(spec.get("providerName"), str):
            self.links_by_provider[spec["providerName"]].add(key)
        self.scheduler.schedule(key)

    def _unlink(self, key: LinkKey, old: dict[str, Any] | None) -> None:
        if old is None:
            return
        spec = old.get("spec") or {}
        self.links_by_secret.get((key[0], spec.get("secretName", "")), set()).discard(key)
        self.links_by_provider.get(spec.get("providerName", ""), set()).discard(key)

    def on_secret(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "DELETED":
            self.secrets.pop(key, None)
        elif not self._store_secret(body):
            return
        for link in self.links_by_secret.get(key, ()):
            self.scheduler.schedule(link)
        for provider in self.providers_by_secret.get(key, ()):
            asyncio.get_running_loop().create_task(self.reconcile_provider(provider))

    def _store_secret(self, body: dict[str, Any]) -> bool:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self.secrets.get(key)
        if old is not None and not _newer(old, body):
            return False
        if old is not None and _rv(old) == _rv(body):
            return False
        self.secrets[key] = _slim(body)
        return True

    async def on_provider(self, kind: str, body: dict[str, Any]) -> None:
        name = body.get("metadata", {}).get("name", "")
        if kind == "DELETED":
            runtime = self.providers.pop(name, None)
            if runtime and runtime.client:
                runtime.client.close()
        else:
            current = self.providers.get(name)
            if current is not None and not _newer(current.body, body):
                return
            if current is None:
                self.providers[name] = ProviderRuntime(name=name, body=body)
            else:
                current.body = body
            await self.reconcile_provider(name)
        for link in self.links_by_provider.get(name, ()):
            self.scheduler.schedule(link)

    # --- providers -----------------------------------------------------------------
    async def reconcile_provider(self, name: str) -> None:
        runtime = self.providers.get(name)
        if runtime is None:
            return
        body = runtime.body
        for ref_key in [k for k, v in self.providers_by_secret.items() if name in v]:
            self.providers_by_secret[ref_key].discard(name)
        try:
            spec = parse_provider(name, body.get("spec"))
        except InvalidInputError as e:
            runtime.spec, runtime.reason, runtime.message = None, ProviderReason.INVALID_SPEC, str(e)
        else:
            secret_value: SecretStr | None = None
            reason, message = ProviderReason.VALID, "the provider is usable"
            if spec.client_secret_ref is not None:
                ref = spec.client_secret_ref
                ref_key = (ref.namespace, ref.name)
                self.providers_by_secret[ref_key].add(name)
                secret = await self._secret_first_contact(ref_key)
                raw = ((secret or {}).get("data") or {}).get(ref.key)
                if secret is None:
                    reason = ProviderReason.CLIENT_SECRET_NOT_FOUND
                    message = f"Secret {ref.namespace}/{ref.name} does not exist"
                elif not raw:
                    reason = ProviderReason.CLIENT_SECRET_NOT_FOUND
                    message = f"Secret {ref.namespace}/{ref.name} has no key {ref.key}"
                else:
                    try:
                        secret_value = SecretStr(base64.b64decode(raw).decode().strip())
                    except ValueError:
                        reason = ProviderReason.CLIENT_SECRET_NOT_FOUND
                        message = f"Secret {ref.namespace}/{ref.name} key {ref.key} is not valid"
            fp = secret_value.fingerprint() if secret_value else None
            if runtime.spec != spec or runtime.secret_fp != fp or runtime.client is None:
                if runtime.client is not None:
                    runtime.client.close()
                runtime.client = ProviderClient(
                    spec, secret_value, observe=metrics.observer(name),
                    connect_timeout=self.settings.connect_timeout,
                    read_timeout=self.settings.read_timeout,
                )
                if runtime.spec is None or runtime.spec.max_concurrent != spec.max_concurrent:
                    runtime.semaphore = asyncio.Semaphore(spec.max_concurrent)
                    runtime.pipeline = asyncio.Semaphore(2 * spec.max_concurrent)
                if runtime.secret_fp != fp:
                    runtime.rejected_failures, runtime.rejected_until = 0, None
                runtime.spec, runtime.secret_fp = spec, fp
            if reason is ProviderReason.VALID and runtime.rejected_failures:
                reason = ProviderReason.CREDENTIALS_REJECTED
                message = "the provider rejected the OAuth client credentials"
            runtime.reason, runtime.message = reason, message
        await self._write_provider_status(runtime)
        for link in self.links_by_provider.get(name, ()):
            self.scheduler.schedule(link)

    async def _write_provider_status(self, runtime: ProviderRuntime) -> None:
        body = runtime.body
        existing = body.get("status") or {}
        generation = body.get("metadata", {}).get("generation", 0)
        ok = runtime.reason is ProviderReason.VALID
        want = cond.Condition(type="Ready", status=Status.TRUE if ok else Status.FALSE,
                              reason=runtime.reason.value, message=runtime.message)
        new = dict(existing)
        new["observedGeneration"] = generation
        new["conditions"] = cond.merge(existing.get("conditions") or [], [want],
                                       now=self.clock(), generation=generation)
        if new == existing:
            return
        try:
            runtime.body = await self._io(self.kube.patch_provider_status, runtime.name, new)
        except ExternalAuthError as e:
            log.warning("cannot write status of ExternalAuthProvider %s: %s", runtime.name, e)

    # --- secrets: first contact ------------------------------------------------------
    async def _secret_first_contact(self, key: LinkKey) -> dict[str, Any] | None:
        """The Secret from the watch cache; if it is not there (not labelled yet), read it
        directly and label it so that the watch carries it from now on."""
        cached = self.secrets.get(key)
        if cached is not None:
            return cached
        try:
            body = await self._io(self.kube.get_secret, *key)
        except ExternalAuthError as e:
            log.warning("cannot read Secret %s/%s: %s", key[0], key[1], e)
            return None
        if body is None:
            return None
        labels = body.get("metadata", {}).get("labels") or {}
        if labels.get(MANAGED_LABEL) != "true":
            try:
                body = await self._io(self.kube.patch_secret, key[0], key[1],
                                      {"metadata": {"labels": {MANAGED_LABEL: "true"}}},
                                      resource_version=None)
            except ExternalAuthError as e:
                log.warning("cannot label Secret %s/%s: %s", key[0], key[1], e)
        self._store_secret(body)
        stored: dict[str, Any] = self.secrets.get(key, body)
        return stored

    # --- links ---------------------------------------------------------------------
    async def _reconcile_key(self, key: Any) -> None:
        await self.reconcile_link(key)

    async def _gather(self, key: LinkKey) -> tuple[deciding.LinkInput, dict[str, Any]] | None:
        body = self.links.get(key)
        if body is None:
            return None
        meta = body.get("metadata", {})
        spec: LinkSpec | None = None
        spec_error = None
        try:
            spec = parse_link(body.get("spec"))
        except InvalidInputError as e:
            spec_error = str(e)
        provider_view = None
        secret_found, tokens, secret_error, formats_stale = False, None, None, False
        if spec is not None:
            runtime = self.providers.get(spec.provider_name)
            provider_view = runtime.view() if runtime is not None else None
            if provider_view is not None and provider_view.spec is not None:
                secret = await self._secret_first_contact((key[0], spec.secret_name))
                if secret is not None:
                    secret_found = True
                    try:
                        tokens = tokmod.parse_secret_data(secret.get("data"), secret_type=secret.get("type"))
                    except InvalidInputError as e:
                        secret_error = str(e)
                    else:
                        assert provider_view.spec is not None
                        wanted = self._format_keys(key, tokens, spec, provider_view.spec)
                        data = secret.get("data") or {}
                        formats_stale = any(data.get(k) != v for k, v in wanted.items())
        annotations = meta.get("annotations") or {}
        inp = deciding.LinkInput(
            now=self.clock(),
            uid=meta.get("uid", ""),
            generation=meta.get("generation", 0),
            spec=spec,
            spec_error=spec_error,
            provider=provider_view,
            secret_found=secret_found,
            tokens=tokens,
            secret_error=secret_error,
            refresh_requested=annotations.get(REFRESH_ANNOTATION),
            status=body.get("status") or {},
            memory=self.memory.get(key, LinkMemory()),
            validation_interval=self.settings.validation_interval,
            formats_stale=formats_stale,
        )
        return inp, body

    async def reconcile_link(self, key: LinkKey) -> None:
        acted: set[Action] = set()
        plan = None
        for _ in range(4):
            gathered = await self._gather(key)
            if gathered is None:
                return
            inp, body = gathered
            plan = deciding.decide(inp)
            if plan.action is Action.REFRESH and Action.REFRESH not in acted:
                acted.add(Action.REFRESH)
                log.info("ExternalAuthLink %s/%s: refreshing (%s)", key[0], key[1], plan.why)
                await self._refresh(key, inp)
                continue
            if plan.action is Action.WRITE_FORMATS and Action.WRITE_FORMATS not in acted:
                acted.add(Action.WRITE_FORMATS)
                await self._write_formats(key, inp)
                continue
            if plan.action is Action.VALIDATE and Action.VALIDATE not in acted:
                acted.add(Action.VALIDATE)
                await self._validate(key, inp)
                continue
            break
        if plan is None:
            return
        await self._record(key, inp, body, plan)

    async def _record(self, key: LinkKey, inp: deciding.LinkInput, body: dict[str, Any],
                      plan: deciding.Plan) -> None:
        existing = body.get("status") or {}
        new = deciding.render_status(plan, existing=existing, now=inp.now, generation=inp.generation)
        if new != existing:
            patch = dict(new)
            for gone in set(existing) - set(new):
                patch[gone] = None
            old_ready = cond.find(existing.get("conditions") or [], "Ready")
            try:
                updated = await self._io(self.kube.patch_link_status, key[0], key[1], patch)
                self.on_link("MODIFIED", updated)
            except NotFoundError:
                return
            except ExternalAuthError as e:
                log.warning("cannot write status of ExternalAuthLink %s/%s: %s", key[0], key[1], e)
                self.scheduler.schedule(key, time.time() + 5)
                return
            ready = cond.find(new["conditions"], "Ready")
            if ready and ready.get("status") == Status.FALSE and (
                old_ready is None or old_ready.get("reason") != ready.get("reason")
            ) and ready.get("reason") in ("SecretNotFound", "SecretInvalid", "ProviderNotFound",
                                          "ProviderNotReady", "InvalidSpec"):
                await self._event(key, "Warning", EventReason.INVALID_INPUT,
                                  f"{ready.get('reason')}: {ready.get('message')}")
        # metrics
        provider = inp.spec.provider_name if inp.spec else ""
        ready_label = "true" if plan.ready else "false"
        previous = self._ready_gauge.get(key)
        if previous != (provider, ready_label):
            if previous is not None:
                metrics.LINKS.labels(*previous).dec()
            metrics.LINKS.labels(provider, ready_label).inc()
            self._ready_gauge[key] = (provider, ready_label)
        if inp.tokens is not None and inp.tokens.expiry is not None:
            metrics.TOKEN_EXPIRY.labels(key[0], key[1]).set(inp.tokens.expiry.timestamp())
        # when to look again
        if plan.action is not Action.NONE:
            # The action could not be done now (e.g. another replica holds the claim): look
            # again soon; the Secret's watch event usually comes first.
            self.scheduler.schedule(key, time.time() + 2)
            return
        wake = plan.wake_at
        if inp.spec is not None and not inp.secret_found and inp.provider and inp.provider.spec:
            wake = inp.now + dt.timedelta(seconds=self.settings.missing_secret_recheck)
        self.scheduler.reset(key, wake.timestamp() if wake else None)

    def _drop_gauges(self, key: LinkKey) -> None:
        previous = self._ready_gauge.pop(key, None)
        if previous is not None:
            metrics.LINKS.labels(*previous).dec()
        try:
            metrics.TOKEN_EXPIRY.remove(key[0], key[1])
        except KeyError:
            pass

    def _remember(self, key: LinkKey, **changes: Any) -> LinkMemory:
        mem = dataclasses.replace(self.memory.get(key, LinkMemory()), **changes)
        self.memory[key] = mem
        return mem

    async def _event(self, key: LinkKey, type_: str, reason: EventReason, message: str) -> None:
        """Post an event in the background: it never delays the refresh path; shutdown
        waits for it like for a persist."""
        body = self.links.get(key)
        if body is None:
            return
        obj = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind", "ExternalAuthLink"),
               "metadata": body.get("metadata", {})}

        async def post() -> None:
            try:
                await self._io(self.kube.post_event, obj, type_=type_, reason=reason.value,
                               message=message, now=self.clock())
            except ExternalAuthError as e:
                log.info("cannot post event %s on %s/%s: %s", reason, key[0], key[1], e)

        task = asyncio.get_running_loop().create_task(post(), name=f"event {reason} {key}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- refresh -------------------------------------------------------------------
    async def _refresh(self, key: LinkKey, inp: deciding.LinkInput) -> None:
        assert inp.spec is not None and inp.provider is not None and inp.provider.spec is not None
        assert inp.tokens is not None and inp.tokens.refresh_token is not None
        spec, provider = inp.spec, inp.provider.spec
        secret_key = (key[0], spec.secret_name)
        consumed = inp.tokens.refresh_token
        async with self._secret_locks[secret_key]:
            await self._refresh_locked(key, secret_key, consumed, spec, provider)

    def _latest_request(self, key: LinkKey) -> str | None:
        """The refresh annotation as it is now: a request that arrived while a refresh was
        in flight is answered by that refresh (single-flight), not by another exchange."""
        meta = (self.links.get(key) or {}).get("metadata", {})
        value = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
        return value if isinstance(value, str) else None

    async def _refresh_locked(self, key: LinkKey, secret_key: LinkKey, consumed: SecretStr,
                              spec: LinkSpec, provider: ProviderSpec) -> None:
        runtime = self.providers.get(provider.name)
        if runtime is None or runtime.client is None or runtime.semaphore is None:
            return
        # A pipeline of 2 x K: up to K links hold a claim while K others exchange, so the
        # claim write overlaps the exchanges instead of adding to each. A claimed link
        # waits for at most one exchange ahead of it, far less than the lease; still, a
        # lease that has run low is renewed before the token is sent (a lease that ran
        # out in the queue would let another replica exchange the same refresh token).
        assert runtime.pipeline is not None
        async with runtime.pipeline:
            claimed = await self._claim(key, secret_key, consumed, provider)
            if claimed is None:
                return
            async with runtime.semaphore:
                if self._lease_left(claimed) < self.settings.read_timeout + self.settings.connect_timeout + 5:
                    claimed = await self._claim(key, secret_key, consumed, provider)
                    if claimed is None:
                        return
                started = time.monotonic()
                result = await self._io(runtime.client.refresh, consumed, now=self.clock())
        verdict = result.classified.verdict
        if verdict is classifying.TokenVerdict.SUCCESS and result.tokens is not None:
            outcome = await self._persist_shielded(key, secret_key, claimed, consumed, result.tokens, spec, provider)
            metrics.REFRESH_DURATION.labels(provider.name).observe(time.monotonic() - started)
            if outcome == "persisted":
                metrics.REFRESH_TOTAL.labels(provider.name, RefreshResult.SUCCESS).inc()
                self._remember(key, last_refresh=self.clock(), failure=None, acted_request=self._latest_request(key),
                               last_refresh_fingerprint=result.tokens.access_token.fingerprint())
                if runtime.rejected_failures:
                    runtime.rejected_failures, runtime.rejected_until = 0, None
                    await self.reconcile_provider(provider.name)
                expiry = result.tokens.expiry
                await self._event(key, "Normal", EventReason.REFRESHED,
                                  "refreshed the access token" + (
                                      f"; it expires at {format_time(expiry)}" if expiry else ""))
                await self._warn_rt_expiry(key, result.tokens)
            elif outcome == "superseded":
                await self._superseded(key, provider.name, self._latest_request(key))
            return
        await self._release(secret_key)
        message = result.classified.message
        log.info("ExternalAuthLink %s/%s: refresh failed (%s): %s", key[0], key[1], verdict.value, message)
        if verdict is classifying.TokenVerdict.DEAD_GRANT:
            fresh = await self._reread(secret_key)
            fresh_tokens = self._tokens_of(fresh)
            if fresh_tokens is not None and fresh_tokens.refresh_token != consumed:
                await self._superseded(key, provider.name, self._latest_request(key))
                return
            metrics.REFRESH_TOTAL.labels(provider.name, RefreshResult.REAUTH_REQUIRED).inc()
            self._remember(key, dead_grant_fingerprint=consumed.fingerprint(), failure=None,
                           acted_request=self._latest_request(key))
            await self._event(key, "Warning", EventReason.REAUTH_REQUIRED,
                              f"{message}: sign in again to write a new token into the Secret")
        elif verdict is classifying.TokenVerdict.CLIENT_REJECTED:
            metrics.REFRESH_TOTAL.labels(provider.name, RefreshResult.PROVIDER_REJECTED).inc()
            runtime.rejected_failures += 1
            wait = scheduling.backoff(failures=runtime.rejected_failures, seed=provider.name,
                                      base=self.settings.backoff_base, cap=self.settings.backoff_cap)
            runtime.rejected_until = self.clock() + dt.timedelta(seconds=wait)
            await self.reconcile_provider(provider.name)
            await self._failed(key, provider.name, self._latest_request(key),
                               RefreshableReason.PROVIDER_CREDENTIALS_REJECTED, message, None,
                               count=False)
        elif verdict is classifying.TokenVerdict.TRANSIENT:
            metrics.REFRESH_TOTAL.labels(provider.name, RefreshResult.TRANSIENT_ERROR).inc()
            await self._failed(key, provider.name, self._latest_request(key),
                               RefreshableReason.RETRYING_TRANSIENT_ERROR, message,
                               result.classified.retry_after, count=False)
        else:  # permanent: tried once, the grant cannot be refreshed as it is
            metrics.REFRESH_TOTAL.labels(provider.name, RefreshResult.REAUTH_REQUIRED).inc()
            self._remember(key, dead_grant_fingerprint=consumed.fingerprint(), failure=None,
                           acted_request=self._latest_request(key))
            await self._event(key, "Warning", EventReason.REFRESH_FAILED,
                              f"{message}; not retried: sign in again")

    def _lease_left(self, secret: dict[str, Any]) -> float:
        """Seconds left on our claim of ``secret`` (0 if it is not ours)."""
        claim = (secret.get("metadata", {}).get("annotations") or {}).get(CLAIM_ANNOTATION, "")
        holder, _, until = claim.rpartition(";")
        try:
            return float(until) - time.time() if holder == self.holder else 0.0
        except ValueError:
            return 0.0

    async def _claim(self, key: LinkKey, secret_key: LinkKey, consumed: SecretStr,
                     provider: ProviderSpec) -> dict[str, Any] | None:
        """Take the cross-replica claim on the Secret (a resourceVersion-preconditioned write),
        or return None when someone else refreshed it, holds a live claim, or the write lost."""
        secret = self.secrets.get(secret_key)
        current = self._tokens_of(secret)
        if current is None or current.refresh_token != consumed:
            # Someone (another link on this Secret, a user) changed it meanwhile.
            self._remember(key, acted_request=self._latest_request(key))
            return None
        claim = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(CLAIM_ANNOTATION)
        now_s = time.time()
        if claim:
            holder, _, until = claim.rpartition(";")
            try:
                expires = float(until)
            except ValueError:
                expires = 0.0
            if holder != self.holder and expires > now_s:
                log.info("Secret %s/%s is being refreshed by %s; waiting", *secret_key, holder)
                self.scheduler.schedule(key, expires + 0.5)
                return None
        lease = f"{self.holder};{now_s + self.settings.claim_lease:.0f}"
        try:
            claimed = await self._io(
                self.kube.patch_secret, *secret_key,
                {"metadata": {"annotations": {CLAIM_ANNOTATION: lease}}},
                resource_version=_rv(secret),
            )
        except ConflictError:
            await self._reread(secret_key)
            return None
        except NotFoundError:
            self.secrets.pop(secret_key, None)
            return None
        except ExternalAuthError as e:
            await self._failed(key, provider.name, self._latest_request(key),
                               RefreshableReason.RETRYING_TRANSIENT_ERROR,
                               f"cannot claim the Secret for refresh: {e}", None)
            return None
        self._store_secret(claimed)
        return claimed

    async def _failed(self, key: LinkKey, provider: str, request: str | None,
                      reason: RefreshableReason, message: str, retry_after: float | None,
                      *, count: bool = True) -> None:
        if count:
            metrics.REFRESH_TOTAL.labels(provider, RefreshResult.TRANSIENT_ERROR).inc()
        previous = self.memory.get(key, LinkMemory()).failure
        failures = (previous.failures if previous else 0) + 1
        wait = scheduling.backoff(failures=failures, seed=f"{key}", base=self.settings.backoff_base,
                                  cap=self.settings.backoff_cap, retry_after=retry_after)
        retry_at = self.clock() + dt.timedelta(seconds=wait)
        if reason is RefreshableReason.PROVIDER_CREDENTIALS_REJECTED:
            runtime = self.providers.get(provider)
            if runtime is not None and runtime.rejected_until is not None:
                retry_at = runtime.rejected_until
        self._remember(key, failure=Failure(reason, message, failures, retry_at),
                       acted_request=self._latest_request(key))
        if previous is None or previous.message != message:
            await self._event(key, "Warning", EventReason.REFRESH_FAILED,
                              f"{message}; retrying with backoff")

    async def _superseded(self, key: LinkKey, provider: str, request: str | None) -> None:
        metrics.REFRESH_TOTAL.labels(provider, RefreshResult.SUPERSEDED).inc()
        self._remember(key, failure=None, acted_request=self._latest_request(key))
        await self._event(key, "Normal", EventReason.REFRESH_SUPERSEDED,
                          "another writer refreshed the token first; its token was kept")

    async def _warn_rt_expiry(self, key: LinkKey, new: tokmod.TokenSet) -> None:
        expiry = new.refresh_token_expiry
        if expiry is None or expiry - self.clock() > RT_EXPIRING_SOON:
            return
        stamp = format_time(expiry)
        if self._warned_rt.get(key) == stamp:
            return
        self._warned_rt[key] = stamp
        await self._event(key, "Warning", EventReason.REFRESH_TOKEN_EXPIRING_SOON,
                          f"the refresh token expires at {stamp}: sign in again before then")

    def _tokens_of(self, secret: dict[str, Any] | None) -> tokmod.TokenSet | None:
        if secret is None:
            return None
        try:
            return tokmod.parse_secret_data(secret.get("data"))
        except InvalidInputError:
            return None

    async def _reread(self, key: LinkKey) -> dict[str, Any] | None:
        try:
            body = await self._io(self.kube.get_secret, *key)
        except ExternalAuthError as e:
            log.warning("cannot re-read Secret %s/%s: %s", key[0], key[1], e)
            return self.secrets.get(key)
        if body is None:
            self.secrets.pop(key, None)
            return None
        self._store_secret(body)
        return body

    async def _release(self, key: LinkKey) -> None:
        secret = self.secrets.get(key)
        annotations = (secret or {}).get("metadata", {}).get("annotations") or {}
        if not annotations.get(CLAIM_ANNOTATION, "").startswith(f"{self.holder};"):
            return
        try:
            body = await self._io(self.kube.patch_secret, *key,
                                  {"metadata": {"annotations": {CLAIM_ANNOTATION: None}}},
                                  resource_version=_rv(secret))
            self._store_secret(body)
        except ExternalAuthError:
            pass  # the lease runs out by itself

    # --- persist: not interruptible ----------------------------------------------------
    async def _persist_shielded(self, key: LinkKey, secret_key: LinkKey, claimed: dict[str, Any],
                                consumed: SecretStr, new: tokmod.TokenSet, spec: LinkSpec,
                                provider: ProviderSpec) -> str:
        task = asyncio.get_running_loop().create_task(
            self._persist(key, secret_key, claimed, consumed, new, spec, provider),
            name=f"persist {secret_key}",
        )
        self._inflight_persists.add(task)
        task.add_done_callback(self._inflight_persists.discard)
        return await asyncio.shield(task)

    def _account(self, key: LinkKey) -> str | None:
        """The identity the provider reported for this link (memory, else its status)."""
        mem = self.memory.get(key)
        if mem is not None and mem.validation is not None and mem.validation.account:
            return mem.validation.account
        account = ((self.links.get(key) or {}).get("status") or {}).get("account")
        return account if isinstance(account, str) else None

    def _format_keys(self, key: LinkKey, tokens: tokmod.TokenSet, spec: LinkSpec,
                     provider: ProviderSpec) -> dict[str, str]:
        return formats.render_keys(list(spec.output_formats), host=provider.host,
                                   username=provider.quirks.git_username,
                                   token=tokens.access_token, account=self._account(key))

    def _token_patch(self, key: LinkKey, new: tokmod.TokenSet, spec: LinkSpec,
                     provider: ProviderSpec) -> dict[str, Any]:
        """Token keys and format keys in one write: a pod never sees a format key that
        disagrees with access_token."""
        data = tokmod.render_token_keys(new)
        data.update(self._format_keys(key, new, spec, provider))
        return {"data": data, "metadata": {"annotations": {CLAIM_ANNOTATION: None}}}

    async def _write_formats(self, key: LinkKey, inp: deciding.LinkInput) -> None:
        """(Re)write the outputFormats keys for the access token the Secret holds now."""
        assert inp.spec is not None and inp.tokens is not None
        assert inp.provider is not None and inp.provider.spec is not None
        secret_key = (key[0], inp.spec.secret_name)
        async with self._secret_locks[secret_key]:
            secret = self.secrets.get(secret_key)
            current = self._tokens_of(secret)
            if current is None or current.access_token != inp.tokens.access_token:
                return  # changed meanwhile: decide again
            data = self._format_keys(key, current, inp.spec, inp.provider.spec)
            try:
                body = await self._io(self.kube.patch_secret, *secret_key, {"data": data},
                                      resource_version=_rv(secret))
                self._store_secret(body)
            except ConflictError:
                metrics.SECRET_WRITE_CONFLICTS.inc()
                await self._reread(secret_key)
            except ExternalAuthError as e:
                log.warning("cannot write output formats into Secret %s/%s: %s", *secret_key, e)

    async def _persist(self, key: LinkKey, secret_key: LinkKey, claimed: dict[str, Any], consumed: SecretStr,
                       new: tokmod.TokenSet, spec: LinkSpec, provider: ProviderSpec) -> str:
        """Write the new tokens with compare-and-swap until written or superseded."""
        patch = self._token_patch(key, new, spec, provider)
        base = claimed
        attempt = 0
        while True:
            attempt += 1
            try:
                body = await self._io(self.kube.patch_secret, *secret_key, patch,
                                      resource_version=_rv(base))
                self._store_secret(body)
                if attempt > 1:
                    log.info("persisted Secret %s/%s after %d attempts", *secret_key, attempt)
                return "persisted"
            except ConflictError:
                metrics.SECRET_WRITE_CONFLICTS.inc()
                fresh: dict[str, Any] | None
                try:
                    fresh = await self._io(self.kube.get_secret, *secret_key)
                except ExternalAuthError:
                    await asyncio.sleep(min(5.0, 0.2 * attempt))
                    continue
                if fresh is None:
                    log.error("Secret %s/%s was deleted while its token was refreshed; "
                              "the new token could not be stored", *secret_key)
                    return "lost"
                stored = self._tokens_of(fresh)
                if stored is not None and stored.refresh_token is not None \
                        and stored.refresh_token != consumed:
                    self._store_secret(fresh)
                    return "superseded"
                base = fresh  # an unrelated edit: re-apply our tokens on the new version
            except ExternalAuthError as e:
                wait = min(10.0, 0.2 * 2 ** min(attempt, 6))
                log.warning("persisting Secret %s/%s failed (%s); retrying in %.1fs",
                            secret_key[0], secret_key[1], e, wait)
                await asyncio.sleep(wait)

    # --- validation ----------------------------------------------------------------
    async def _validate(self, key: LinkKey, inp: deciding.LinkInput) -> None:
        assert inp.provider is not None and inp.provider.spec is not None and inp.tokens is not None
        runtime = self.providers.get(inp.provider.spec.name)
        if runtime is None or runtime.client is None:
            return
        outcome = await self._io(runtime.client.validate, inp.tokens.access_token, now=self.clock())
        now = self.clock()
        verdict = outcome.verdict
        metrics.VALIDATION_TOTAL.labels(runtime.name, verdict.value).inc()
        reason = {
            classifying.ValidationVerdict.VALID: ValidatedReason.VALID,
            classifying.ValidationVerdict.INVALID: ValidatedReason.INVALID,
            classifying.ValidationVerdict.RATE_LIMITED: ValidatedReason.RATE_LIMITED,
            classifying.ValidationVerdict.UNREACHABLE: ValidatedReason.UNREACHABLE,
        }[verdict]
        retry_at = None
        if verdict in (classifying.ValidationVerdict.RATE_LIMITED,
                       classifying.ValidationVerdict.UNREACHABLE):
            previous = self.memory.get(key, LinkMemory()).validation
            n = 1 if previous is None or previous.reason not in (
                ValidatedReason.RATE_LIMITED, ValidatedReason.UNREACHABLE) else 2
            wait = scheduling.backoff(failures=n, seed=f"{key}/v", base=30.0,
                                      cap=self.settings.backoff_cap, retry_after=outcome.retry_after)
            if outcome.retry_after is not None:
                wait = max(outcome.retry_after + 1.0, 1.0)
            retry_at = now + dt.timedelta(seconds=wait)
        previous = self.memory.get(key, LinkMemory()).validation
        self._remember(key, validation=Validation(
            reason=reason, message=outcome.message, at=now,
            token_fingerprint=inp.tokens.access_token.fingerprint(),
            account=outcome.account or (previous.account if previous else None)
            or (inp.status.get("account") if isinstance(inp.status.get("account"), str) else None),
            retry_at=retry_at,
        ))
        if verdict is not classifying.ValidationVerdict.VALID and (
            previous is None or previous.reason != reason
        ):
            await self._event(key, "Warning", EventReason.VALIDATION_FAILED, outcome.message)

    # --- lifecycle -----------------------------------------------------------------
    async def drain(self) -> None:
        """Stop scheduling; wait for in-flight reconciles and every pending persist."""
        await self.scheduler.stop(grace=self.settings.shutdown_grace)
        if self._inflight_persists:
            log.info("waiting for %d token write(s) to land", len(self._inflight_persists))
            await asyncio.wait(set(self._inflight_persists), timeout=self.settings.shutdown_grace)
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
