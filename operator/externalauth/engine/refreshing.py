"""One refresh of one Secret: claim → exchange → persist, returning a :class:`Refresh`
(an outcome, never a side effect on the link: the engine applies it in one place).

Exactly once per refresh token: one refresh per Secret at a time in this process (a
lock), across replicas a claim on the Secret taken before the provider is called, and
the new tokens persisted before anything else happens with them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Mapping

from externalauth.engine.ports import Clock
from externalauth.engine.provider_states import Providers
from externalauth.engine.writing import ClaimState, PersistOutcome, SecretWriter, tokens_of
from externalauth.model import tokens as tokmod
from externalauth.model.bodies import RawBody
from externalauth.model.names import LinkKey
from externalauth.model.secure import SecretStr
from externalauth.policy.classifying import TokenVerdict


class RefreshOutcome(enum.Enum):
    PERSISTED = "persisted"  # new tokens are in the Secret
    SUPERSEDED = "superseded"  # someone else refreshed first; their token was kept
    LOST = "lost"  # the provider answered but the Secret could not take the tokens
    CHANGED = "changed"  # the Secret changed before the claim: nothing was sent
    RACED = "raced"  # the claim lost a race: nothing was sent, decide again
    CLAIMED_ELSEWHERE = "claimed-elsewhere"  # another replica is refreshing it
    CLAIM_FAILED = "claim-failed"  # the claim could not be written: nothing was sent
    NO_CLIENT = "no-client"  # the provider went away meanwhile
    DEAD_GRANT = "dead-grant"  # the provider refused the refresh token
    CLIENT_REJECTED = "client-rejected"  # the provider refused the OAuth client
    TRANSIENT = "transient"  # try again later
    PERMANENT = "permanent"  # tried once; will not work as it is


_NOT_SENT = frozenset({RefreshOutcome.CHANGED, RefreshOutcome.RACED, RefreshOutcome.CLAIMED_ELSEWHERE,
                       RefreshOutcome.CLAIM_FAILED, RefreshOutcome.NO_CLIENT})
_FAILURES = {
    TokenVerdict.CLIENT_REJECTED: RefreshOutcome.CLIENT_REJECTED,
    TokenVerdict.TRANSIENT: RefreshOutcome.TRANSIENT,
    TokenVerdict.PERMANENT: RefreshOutcome.PERMANENT,
    TokenVerdict.DEAD_GRANT: RefreshOutcome.DEAD_GRANT,
    # A 2xx the operator could not use: the refresh token may be spent, so it is never
    # sent again blindly; like a permanent error, the link waits for a new sign-in.
    TokenVerdict.UNUSABLE_ANSWER: RefreshOutcome.PERMANENT,
}
_PERSISTED = {
    PersistOutcome.PERSISTED: (RefreshOutcome.PERSISTED, ""),
    PersistOutcome.SUPERSEDED: (RefreshOutcome.SUPERSEDED, ""),
    PersistOutcome.LOST_GONE: (RefreshOutcome.LOST, "the Secret was deleted during the refresh"),
    PersistOutcome.LOST_INVALID: (RefreshOutcome.LOST, "the API server refused to store it"),
}


@dataclasses.dataclass(frozen=True)
class Refresh:
    outcome: RefreshOutcome
    message: str = ""
    retry_after: float | None = None  # seconds, from the provider
    tokens: tokmod.TokenSet | None = None  # what was persisted
    claimed_until: dt.datetime | None = None  # CLAIMED_ELSEWHERE: when that claim ends
    seconds: float | None = None  # exchange + persist
    unsaved: float | None = None  # from the provider's answer to the persist's end
    persisted: PersistOutcome | None = None  # how the persist ended, when there was one
    answered: bool = True  # False: the provider's answer never arrived
    clock_skew: float | None = None  # the provider's clock minus ours, from its Date header

    @property
    def sent(self) -> bool:
        """Was the refresh token sent to the provider?"""
        return self.outcome not in _NOT_SENT

    @property
    def lost_reason(self) -> str | None:
        """LOST: the ``reason`` label of externalauth_tokens_lost_total (gone, invalid)."""
        if self.outcome is not RefreshOutcome.LOST or self.persisted is None:
            return None
        return self.persisted.value.removeprefix("lost-")


#: Renders the Secret keys to write for new tokens (token keys plus output formats; None
#: removes a key).
Render = Callable[[tokmod.TokenSet], Mapping[str, "str | None"]]


class Refresher:
    def __init__(self, *, writer: SecretWriter, providers: Providers, clock: Clock,
                 renew_below: float) -> None:
        self._writer = writer
        self._providers = providers
        self._clock = clock
        self._renew_below = renew_below  # seconds of lease a claim must have left at sending

    async def refresh(self, key: LinkKey, *, provider: str, consumed: SecretStr,
                      render: Render) -> Refresh:
        """Refresh the Secret ``key`` that holds ``consumed``, at ``provider``."""
        async with self._writer.lock(key):
            return await self._locked(key, provider=provider, consumed=consumed, render=render)

    async def _locked(self, key: LinkKey, *, provider: str, consumed: SecretStr,
                      render: Render) -> Refresh:
        runtime = self._providers.get(provider)
        if runtime is None or runtime.client is None or runtime.semaphore is None \
                or runtime.pipeline is None:
            return Refresh(RefreshOutcome.NO_CLIENT)
        # A pipeline of 2 x K: up to K links hold a claim while K others exchange, so the
        # claim write overlaps the exchanges instead of adding to each. A claimed link
        # waits for at most one exchange ahead of it, far less than the lease; still, a
        # lease that has run low is renewed before the token is sent (a lease that ran
        # out in the queue would let another replica exchange the same refresh token).
        async with runtime.pipeline:
            claimed = await self._claim(key, consumed)
            if isinstance(claimed, Refresh):
                return claimed
            async with runtime.semaphore:
                if self._writer.lease_left(claimed) < self._renew_below:
                    claimed = await self._claim(key, consumed)
                    if isinstance(claimed, Refresh):
                        return claimed
                started = self._clock.monotonic()
                result = await runtime.client.refresh(consumed, now=self._clock.now())
        answered = self._clock.monotonic()
        verdict = result.classified
        if verdict.verdict is TokenVerdict.SUCCESS and result.tokens is not None:
            persisted = await self._writer.persist(key, base=claimed, consumed=consumed,
                                                   data=render(result.tokens))
            outcome, message = _PERSISTED[persisted]
            ended = self._clock.monotonic()
            return Refresh(outcome, message=message, tokens=result.tokens, persisted=persisted,
                           seconds=ended - started, unsaved=ended - answered, clock_skew=result.clock_skew)
        if verdict.verdict is TokenVerdict.UNUSABLE_ANSWER and result.refresh_token is not None:
            # Never drop what was obtained: the answer's new refresh token is stored, and
            # the next try uses it.
            persisted = await self._writer.persist(
                key, base=claimed, consumed=consumed,
                data={tokmod.REFRESH_TOKEN: tokmod.b64(result.refresh_token.reveal())})
            if persisted is PersistOutcome.PERSISTED:
                return Refresh(RefreshOutcome.TRANSIENT, persisted=persisted, message=(
                    f"{verdict.message}; the new refresh token it carried was stored"))
        await self._writer.release(key)
        outcome = _FAILURES.get(verdict.verdict, RefreshOutcome.TRANSIENT)
        if outcome is RefreshOutcome.DEAD_GRANT:
            # Re-checked against a fresh read: a changed token means another writer won.
            fresh = tokens_of(await self._writer.reread(key))
            if fresh is not None and fresh.refresh_token != consumed:
                return Refresh(RefreshOutcome.SUPERSEDED)
        return Refresh(outcome, message=verdict.message, retry_after=verdict.retry_after,
                       answered=verdict.answered, clock_skew=result.clock_skew)

    async def _claim(self, key: LinkKey, consumed: SecretStr) -> RawBody | Refresh:
        result = await self._writer.claim(key, consumed)
        if result.state is ClaimState.CLAIMED and result.body is not None:
            return result.body
        if result.state is ClaimState.HELD_ELSEWHERE and result.claim is not None:
            until = dt.datetime.fromtimestamp(result.claim.until, dt.UTC)
            return Refresh(RefreshOutcome.CLAIMED_ELSEWHERE, claimed_until=until)
        if result.state is ClaimState.FAILED:
            return Refresh(RefreshOutcome.CLAIM_FAILED, message=result.message)
        if result.state is ClaimState.CHANGED:
            return Refresh(RefreshOutcome.CHANGED)
        return Refresh(RefreshOutcome.RACED)
