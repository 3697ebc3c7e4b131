"""The engine's seams: what it needs from the Kubernetes side, the provider side and
time, as Protocols. The real implementations wrap blocking clients in thread pools
(:mod:`externalauth.engine.adapters`); unit tests hand the engine fakes and a fake clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from externalauth.model.bodies import RawBody
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.policy import revocations
from externalauth.policy.classifying import ExchangeResult, ValidationOutcome


class KubePort(Protocol):
    """The API-server calls the engine makes (reads come from watches; these are the
    writes, plus the re-reads a compare-and-swap needs)."""

    async def get_secret(self, namespace: str, name: str, *, urgent: bool = False) -> RawBody | None:
        """The Secret, or None. ``urgent``: the re-read of a persist (see :meth:`patch_secret`)."""
        ...

    async def get_secret_metadata(self, namespace: str, name: str) -> RawBody | None:
        """The Secret's metadata only (never its data), or None when it does not exist."""
        ...

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any],
                           *, resource_version: str | None, urgent: bool = False) -> RawBody:
        """``urgent``: the persist of new tokens, which lives only in memory until it lands
        (a hard kill loses it): it never queues behind other API-server calls."""
        ...

    async def patch_link_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                *, resource_version: str | None = None) -> RawBody:
        """Merge ``status`` into the link's, compare-and-swap on ``resource_version``."""
        ...

    async def patch_provider_status(self, name: str, status: Mapping[str, Any]) -> RawBody: ...

    async def patch_link_finalizers(self, namespace: str, name: str, finalizers: list[str],
                                    *, resource_version: str | None) -> RawBody:
        """Replace the link's finalizers, compare-and-swap on ``resource_version``."""
        ...

    async def post_event(self, obj: RawBody, *, type_: str, reason: str, message: str,
                         now: dt.datetime) -> None: ...

    async def list_providers(self) -> list[RawBody]: ...


class ProviderPort(Protocol):
    """One provider's token and validation endpoints."""

    @property
    def spec(self) -> ProviderSpec:
        """The spec as the client uses it (URLs resolved by OIDC discovery, if any)."""
        ...

    async def refresh(self, refresh_token: SecretStr, *, now: dt.datetime,
                      send_before: float | None = None) -> ExchangeResult:
        """Exchange ``refresh_token``. ``send_before`` (the clock's monotonic scale): when the
        call is about to be sent, after any wait for its turn, it is not sent if less than
        ``timing.MIN_SEND_WINDOW`` is left before this instant (a TRANSIENT outcome, nothing
        sent), and otherwise ends by it (contract §9.15, ``timing.call_budget``)."""
        ...

    async def validate(self, access_token: SecretStr, *, now: dt.datetime) -> ValidationOutcome: ...

    async def revoke(self, *, refresh_token: SecretStr | None, access_token: SecretStr | None,
                     now: dt.datetime) -> revocations.Outcome: ...

    def close(self) -> None: ...


#: Makes the client for a provider spec and its client secret (None: a public client).
#: Async: making one may mean I/O (OIDC discovery), which must not block the event loop.
ProviderFactory = Callable[[ProviderSpec, "SecretStr | None"], Awaitable[ProviderPort]]


class Clock(Protocol):
    """The one source of time for the engine: decisions, leases, delays and waits."""

    def now(self) -> dt.datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        """Return when ``event`` is set or ``timeout`` seconds have passed."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
