"""The engine's knobs (set by ``externalauth run``; tests shorten some)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from externalauth.model.names import DEFAULT_OPERATOR_NAMESPACE
from externalauth.policy import budgets, deciding, timing
from externalauth.policy.sharding import Shard


@dataclasses.dataclass(frozen=True)
class Settings:
    validation_interval: dt.timedelta = deciding.DEFAULT_VALIDATION_INTERVAL
    claim_lease: float = 60.0  # seconds a claim on a Secret lasts
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    api_threads: int = 16  # blocking API-server calls in flight
    persist_threads: int = 8  # persists of new tokens: a pool of their own, never queued behind others
    provider_threads: int = 4  # provider clients built at once (OIDC discovery); calls have their own
    concurrency: int = 512  # links reconciled at once
    shutdown_grace: float = 60.0
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    provider_deadline: float = 30.0  # the whole provider call, shorter than the claim lease
    # How long a deleted link with revokeOnDelete waits for its provider (contract §2).
    revocation_deadline: float = timing.REVOCATION_DEADLINE.total_seconds()
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE  # where client secrets live
    shard: Shard = dataclasses.field(default_factory=Shard)  # which namespaces this replica serves
    # Calls that are not due, per namespace per provider (contract §9.16): at once, then a second
    tenant_burst: int = budgets.BURST
    tenant_rate: float = budgets.RATE

    @property
    def provider_call_budget(self) -> float:
        """Longest a provider call can take, with a margin; a claim is renewed when less
        than this is left of it before the refresh token is sent."""
        return self.provider_deadline + timing.CALL_BUDGET_MARGIN
