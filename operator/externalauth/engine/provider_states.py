"""Provider runtime and status: for each ExternalAuthProvider, its parsed spec, its
client (made by the injected factory), its concurrency bounds, whether the provider
rejected its OAuth client lately, and the ``Ready`` condition on its status."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable

from externalauth.engine.caches import Caches
from externalauth.engine.ports import Clock, KubePort, ProviderFactory, ProviderPort
from externalauth.engine.scheduling import FairSlots
from externalauth.engine.settings import Settings
from externalauth.errors import DiscoveryError, ExternalAuthError, InvalidInputError
from externalauth.model import conditions as cond
from externalauth.model.bodies import RawBody
from externalauth.model.names import LinkKey
from externalauth.model.reasons import ProviderReason, Status
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec, parse_provider
from externalauth.policy import classifying, timing
from externalauth.policy.deciding import ProviderView

log = logging.getLogger(__name__)
SecretFetcher = Callable[[LinkKey], Awaitable[RawBody | None]]


@dataclasses.dataclass
class ProviderRuntime:
    name: str
    spec: ProviderSpec | None = None
    reason: ProviderReason = ProviderReason.INVALID_SPEC
    message: str = ""
    client: ProviderPort | None = None
    semaphore: FairSlots | None = None  # K token calls in flight, shared fairly by namespaces
    pipeline: FairSlots | None = None  # 2K links between claim and exchange, the same
    validations: asyncio.Semaphore | None = None  # K validation calls in flight (their own bound)
    rejected_failures: int = 0
    rejected_until: dt.datetime | None = None
    secret_fp: str | None = None
    clock_skew: float | None = None  # seconds the provider's clock is ahead, last measured

    def view(self) -> ProviderView:
        if self.spec is None or self.client is None or self.reason in (
            ProviderReason.INVALID_SPEC, ProviderReason.CLIENT_SECRET_NOT_FOUND
        ):
            return ProviderView(spec=None, not_ready_message=self.message)
        # The client's spec: its URLs resolved (OIDC discovery). self.spec stays the parsed
        # one, to notice a changed ExternalAuthProvider.
        return ProviderView(spec=self.client.spec, credentials_rejected_until=self.rejected_until,
                            clock_skew_message=classifying.skew_message(self.clock_skew))


class Providers:
    def __init__(self, *, kube: KubePort, caches: Caches, clock: Clock, settings: Settings,
                 make_client: ProviderFactory, fetch_secret: SecretFetcher) -> None:
        self._kube = kube
        self._caches = caches
        self._clock = clock
        self._settings = settings
        self._make_client = make_client
        self._fetch_secret = fetch_secret
        self._runtimes: dict[str, ProviderRuntime] = {}

    def get(self, name: str) -> ProviderRuntime | None:
        return self._runtimes.get(name)

    def view(self, name: str) -> ProviderView | None:
        runtime = self._runtimes.get(name)
        return runtime.view() if runtime is not None else None

    def forget(self, name: str) -> None:
        runtime = self._runtimes.pop(name, None)
        if runtime is not None and runtime.client is not None:
            runtime.client.close()

    def close(self) -> None:
        for name in list(self._runtimes):
            self.forget(name)

    def note_clock_skew(self, name: str, skew: float | None) -> None:
        """The provider's clock, as its last answer's Date header told it."""
        runtime = self._runtimes.get(name)
        if runtime is not None and skew is not None:
            runtime.clock_skew = skew

    # --- what refreshes learnt about the OAuth client --------------------------------
    async def client_rejected(self, name: str) -> dt.datetime | None:
        """The provider rejected the OAuth client: back off the whole provider. Returns
        when its links may try again."""
        runtime = self._runtimes.get(name)
        if runtime is None:
            return None
        runtime.rejected_failures += 1
        wait = timing.backoff(failures=runtime.rejected_failures, seed=name,
                              base=self._settings.backoff_base, cap=self._settings.backoff_cap)
        runtime.rejected_until = timing.after(self._clock.now(), wait)
        await self.reconcile(name)
        return runtime.rejected_until

    async def client_accepted(self, name: str) -> bool:
        """A refresh succeeded: the client is fine again. True if that changed anything."""
        runtime = self._runtimes.get(name)
        if runtime is None or not runtime.rejected_failures:
            return False
        runtime.rejected_failures, runtime.rejected_until = 0, None
        await self.reconcile(name)
        return True

    # --- reconcile ---------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        """Bring the runtime in line with the cached body and write the provider's status."""
        body = self._caches.providers.get(name)
        if body is None:
            self.forget(name)
            return
        runtime = self._runtimes.setdefault(name, ProviderRuntime(name=name))
        try:
            spec = parse_provider(name, body.get("spec"))
        except InvalidInputError as e:
            self._caches.index_client_secret(name, None)
            self._drop_client(runtime)
            runtime.reason, runtime.message = ProviderReason.INVALID_SPEC, str(e)
        else:
            secret, reason, message = await self._client_secret(spec)
            try:
                await self._rebuild(runtime, spec, secret)
            except DiscoveryError as e:
                log.warning("ExternalAuthProvider %s: %s", name, e)
                self._drop_client(runtime)
                reason, message = ProviderReason.INVALID_SPEC, str(e)
            except (ssl.SSLError, ValueError) as e:
                # A caBundle that looks like PEM but does not parse: this provider is
                # unusable, every other one is served (security review M5).
                log.warning("ExternalAuthProvider %s: cannot build its client (%s)", name, type(e).__name__)
                self._drop_client(runtime)
                reason, message = ProviderReason.INVALID_SPEC, "spec.caBundle does not hold usable PEM certificates"
            if reason is ProviderReason.VALID and runtime.rejected_failures:
                reason = ProviderReason.CREDENTIALS_REJECTED
                message = "the provider rejected the OAuth client credentials"
            runtime.reason, runtime.message = reason, message
        await self._write_status(runtime, body)

    async def _client_secret(self, spec: ProviderSpec) -> tuple[SecretStr | None, ProviderReason, str]:
        ref = spec.client_secret_ref
        self._caches.index_client_secret(spec.name, (ref.namespace, ref.name) if ref else None)
        if ref is None:
            return None, ProviderReason.VALID, "the provider is usable"
        if ref.namespace != self._settings.operator_namespace:
            # Like cert-manager's cluster resource namespace: a provider can name no Secret
            # outside the operator's own namespace (contract §1).
            return None, ProviderReason.INVALID_SPEC, (
                f"spec.clientSecretRef must name a Secret in the operator's namespace "
                f"{self._settings.operator_namespace}, not {ref.namespace}")
        where = f"Secret {ref.namespace}/{ref.name}"
        secret = await self._fetch_secret((ref.namespace, ref.name))
        if secret is None:
            return None, ProviderReason.CLIENT_SECRET_NOT_FOUND, f"{where} does not exist"
        raw = (secret.get("data") or {}).get(ref.key)
        if not raw:
            return None, ProviderReason.CLIENT_SECRET_NOT_FOUND, f"{where} has no key {ref.key}"
        try:
            value = base64.b64decode(raw, validate=True).decode().strip()
        except (binascii.Error, ValueError):
            return None, ProviderReason.CLIENT_SECRET_NOT_FOUND, f"{where} key {ref.key} is not valid"
        return SecretStr(value), ProviderReason.VALID, "the provider is usable"

    def _drop_client(self, runtime: ProviderRuntime) -> None:
        if runtime.client is not None:
            runtime.client.close()
        runtime.client, runtime.spec, runtime.secret_fp = None, None, None

    async def _rebuild(self, runtime: ProviderRuntime, spec: ProviderSpec, secret: SecretStr | None) -> None:
        """A new client when the spec or the client secret changed; new bounds when K did."""
        fp = secret.fingerprint() if secret else None
        if runtime.spec == spec and runtime.secret_fp == fp and runtime.client is not None:
            return
        if runtime.client is not None:
            runtime.client.close()
        runtime.client = await self._make_client(spec, secret)
        if runtime.spec is None or runtime.spec.max_concurrent != spec.max_concurrent \
                or runtime.semaphore is None:
            runtime.pipeline = FairSlots(2 * spec.max_concurrent)
            # Calls that are not due skip the pipeline and wait until no due refresh is in it.
            runtime.semaphore = FairSlots(spec.max_concurrent, behind=runtime.pipeline)
            runtime.validations = asyncio.Semaphore(spec.max_concurrent)
        if runtime.secret_fp != fp:
            runtime.rejected_failures, runtime.rejected_until = 0, None
        runtime.spec, runtime.secret_fp = spec, fp

    async def _write_status(self, runtime: ProviderRuntime, body: RawBody) -> None:
        existing = body.get("status") or {}
        generation = (body.get("metadata") or {}).get("generation", 0)
        ok = runtime.reason is ProviderReason.VALID
        want = cond.Condition(type="Ready", status=Status.TRUE if ok else Status.FALSE,
                              reason=runtime.reason.value, message=runtime.message)
        new = dict(existing)
        new["observedGeneration"] = generation
        new["conditions"] = cond.merge(existing.get("conditions") or [], [want],
                                       now=self._clock.now(), generation=generation)
        if new == existing:
            return
        try:
            self._caches.store_provider(await self._kube.patch_provider_status(runtime.name, new))
        except ExternalAuthError as e:
            log.warning("cannot write status of ExternalAuthProvider %s: %s", runtime.name, e)
