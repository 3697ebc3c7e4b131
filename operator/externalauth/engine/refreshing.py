"""One refresh of one Secret: claim → exchange → persist, returning a
:class:`~externalauth.policy.effects.Refresh` (an outcome, never a side effect on the link:
what it means is :func:`~externalauth.policy.effects.refresh_effects`).

Exactly once per refresh token: one refresh per Secret at a time in this process (a
lock), across replicas a claim on the Secret taken before the provider is called, and
the new tokens persisted before anything else happens with them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from externalauth.engine import scheduling
from externalauth.engine.ports import Clock, ProviderPort
from externalauth.engine.provider_states import Providers
from externalauth.engine.writing import ClaimState, PersistOutcome, SecretWriter
from externalauth.model import tokens as tokmod
from externalauth.model.bodies import RawBody
from externalauth.model.names import LinkKey
from externalauth.model.secure import SecretStr
from externalauth.policy import timing
from externalauth.policy.classifying import ExchangeResult, TokenVerdict
from externalauth.policy.effects import Refresh, RefreshOutcome

_FAILURES = {
    TokenVerdict.CLIENT_REJECTED: RefreshOutcome.CLIENT_REJECTED,
    TokenVerdict.TRANSIENT: RefreshOutcome.TRANSIENT,
    TokenVerdict.PERMANENT: RefreshOutcome.PERMANENT,
    TokenVerdict.DEAD_GRANT: RefreshOutcome.DEAD_GRANT,
    # A 2xx the operator could not use: the refresh token may be spent, so it is never
    # sent again blindly; like a permanent error, the link waits for a new sign-in.
    TokenVerdict.UNUSABLE_ANSWER: RefreshOutcome.PERMANENT,
}
_PERSISTED = {  # (outcome, message, the reason label of externalauth_tokens_lost_total)
    PersistOutcome.PERSISTED: (RefreshOutcome.PERSISTED, "", None),
    PersistOutcome.SUPERSEDED: (RefreshOutcome.SUPERSEDED, "", None),
    PersistOutcome.LOST_GONE: (RefreshOutcome.LOST, "the Secret was deleted during the refresh", "gone"),
    PersistOutcome.LOST_INVALID: (RefreshOutcome.LOST, "the API server refused to store it", "invalid"),
}


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
                      render: Render, due: bool = True) -> Refresh:
        """Refresh the Secret ``key`` that holds ``consumed``, at ``provider``; ``due``: the
        token's expiry asks for it (else it waits behind due work for the provider's slots)."""
        async with self._writer.lock(key):
            return await self._locked(key, provider=provider, consumed=consumed, render=render, due=due)

    async def _locked(self, key: LinkKey, *, provider: str, consumed: SecretStr,
                      render: Render, due: bool) -> Refresh:
        runtime = self._providers.get(provider)
        if runtime is None or runtime.client is None or runtime.semaphore is None \
                or runtime.pipeline is None:
            return Refresh(RefreshOutcome.NO_CLIENT)
        # A pipeline of 2 x K: up to K links hold a claim while K others exchange, so the
        # claim write overlaps the exchanges instead of adding to each. A claimed link
        # waits for at most one exchange ahead of it, far less than the lease; still, a
        # lease that has run low is renewed before the token is sent (a lease that ran
        # out in the queue would let another replica exchange the same refresh token). The
        # provider checks the lease again when the call is about to be sent, after any wait
        # for a thread, and caps the call's deadline by it (contract §9.15).
        # Both bounds are shared fairly by the namespaces that wait (contract §9.16), and a
        # link that has to wait for the provider gives its reconcile slot to another link.
        # A call that is not due skips the pipeline: it waits for one of the K slots until
        # no due refresh is in the pipeline, then claims; so it never sits on a pipeline
        # slot while it waits behind due work (the 50 calls of a namespace's burst would
        # leave another namespace's due refreshes K of their 2K, and their claims would no
        # longer overlap the exchanges), nor takes a K slot a due refresh is claiming for.
        first = runtime.pipeline if due else runtime.semaphore
        if not first.free_for(due=due):
            scheduling.give_up_slot()
        async with first.slot(key[0], due=due):
            with scheduling.due_work():  # (not due: it holds a K slot, its claim goes first)
                claimed = await self._claim(key, consumed)
            if isinstance(claimed, Refresh):
                return claimed
            if due:
                async with runtime.semaphore.slot(key[0]):
                    sent = await self._send(runtime.client, consumed, claimed, key=key)
            else:
                sent = await self._send(runtime.client, consumed, claimed, key=key)
        if isinstance(sent, Refresh):
            return sent
        claimed, started, result = sent
        answered = self._clock.monotonic()
        verdict = result.classified
        if verdict.verdict is TokenVerdict.SUCCESS and result.tokens is not None:
            persisted = await self._writer.persist(key, base=claimed, consumed=consumed,
                                                   data=render(result.tokens))
            outcome, message, lost_reason = _PERSISTED[persisted]
            ended = self._clock.monotonic()
            return Refresh(outcome, message=message, tokens=result.tokens, stored=True, lost_reason=lost_reason,
                           seconds=ended - started, unsaved=ended - answered, clock_skew=result.clock_skew)
        if verdict.verdict is TokenVerdict.UNUSABLE_ANSWER and result.refresh_token is not None:
            # Never drop what was obtained: the answer's new refresh token is stored, and
            # the next try uses it.
            persisted = await self._writer.persist(
                key, base=claimed, consumed=consumed,
                data={tokmod.REFRESH_TOKEN: tokmod.b64(result.refresh_token.reveal())})
            if persisted is PersistOutcome.PERSISTED:
                return Refresh(RefreshOutcome.TRANSIENT, stored=True, message=(
                    f"{verdict.message}; the new refresh token it carried was stored"))
        outcome = _FAILURES.get(verdict.verdict, RefreshOutcome.TRANSIENT)
        # A dead grant is marked on the Secret in the write that drops the claim: no replica
        # can claim the Secret for this token again without seeing it (sent once, cluster-wide).
        await self._writer.release(key, dead=consumed if outcome is RefreshOutcome.DEAD_GRANT else None)
        if outcome is RefreshOutcome.DEAD_GRANT:
            # Re-checked against a fresh read: a changed token means another writer won.
            if await self._writer.replaced(key, consumed):
                return Refresh(RefreshOutcome.SUPERSEDED)
        return Refresh(outcome, message=verdict.message, retry_after=verdict.retry_after,
                       answered=verdict.answered, clock_skew=result.clock_skew)

    async def _send(self, client: ProviderPort, consumed: SecretStr, claimed: RawBody, *,
                    key: LinkKey) -> tuple[RawBody, float, ExchangeResult] | Refresh:
        """The exchange, within one of the provider's K slots: the claim renewed first if its
        lease ran low; (the claim, when the call started, its result)."""
        kept = await self._claim(key, consumed, keep=claimed)  # renewed if low
        if isinstance(kept, Refresh):
            return kept
        started = self._clock.monotonic()
        send_before = started + self._writer.lease_left(kept) - timing.LEASE_SEND_MARGIN
        result = await client.refresh(consumed, now=self._clock.now(), send_before=send_before)
        return kept, started, result

    async def _claim(self, key: LinkKey, consumed: SecretStr, *, keep: RawBody | None = None) -> RawBody | Refresh:
        result = await self._writer.claim(key, consumed, keep=keep, keep_above=self._renew_below)
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
