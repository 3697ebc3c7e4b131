"""What the outcome of a refresh or a validation *means* for its link: the memory to keep,
the metrics to count, the events to post. Pure: the engine passes ``now``, the jitter seed
and its settings in, and only executes what comes back (``engine/reconciler.py``).

A refresh can also teach something about the provider's OAuth client (accepted again, or
rejected): :func:`client_news` says what, the engine tells the provider first, and the
provider's backoff then bounds the link's retry (``rejected_until``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from externalauth.model import tokens as tokmod
from externalauth.model.durations import format_time
from externalauth.model.reasons import EventReason, RefreshableReason, RefreshResult, ValidatedReason
from externalauth.policy import remembering, timing
from externalauth.policy.classifying import ValidationOutcome
from externalauth.policy.deciding import LinkMemory


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


@dataclasses.dataclass(frozen=True)
class Refresh:
    """What one refresh did (``engine/refreshing.py``): never a side effect on the link."""

    outcome: RefreshOutcome
    message: str = ""
    retry_after: float | None = None  # seconds, from the provider
    tokens: tokmod.TokenSet | None = None  # what was persisted
    claimed_until: dt.datetime | None = None  # CLAIMED_ELSEWHERE: when that claim ends
    seconds: float | None = None  # exchange + persist
    unsaved: float | None = None  # from the provider's answer to the persist's end
    stored: bool = False  # something was written into the Secret (tokens, or a new refresh token)
    lost_reason: str | None = None  # LOST: the ``reason`` label of externalauth_tokens_lost_total
    answered: bool = True  # False: the provider's answer never arrived
    clock_skew: float | None = None  # the provider's clock minus ours, from its Date header

    @property
    def sent(self) -> bool:
        """Was the refresh token sent to the provider?"""
        return self.outcome not in _NOT_SENT


class ClientNews(enum.Enum):
    ACCEPTED = "accepted"  # a refresh succeeded: the provider's client is fine (again)
    REJECTED = "rejected"  # the provider refused the client: back off the whole provider


def client_news(outcome: RefreshOutcome) -> ClientNews | None:
    """What a refresh's outcome says about the provider's OAuth client."""
    return {RefreshOutcome.PERSISTED: ClientNews.ACCEPTED,
            RefreshOutcome.CLIENT_REJECTED: ClientNews.REJECTED}.get(outcome)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal, Warning
    reason: EventReason
    message: str


def _warning(reason: EventReason, message: str) -> Event:
    return Event("Warning", reason, message)


@dataclasses.dataclass(frozen=True)
class Effects:
    """What to do about one outcome, in this order: remember, count, post."""

    memory: LinkMemory  # the link's memory from now on
    count: RefreshResult | None = None  # externalauth_refresh_total{result}
    lost: str | None = None  # externalauth_tokens_lost_total{reason}
    events: tuple[Event, ...] = ()
    rt_warned: str | None = None  # the refresh token's expiry just warned about (said once)
    refresh_seconds: float | None = None  # externalauth_refresh_duration_seconds
    unsaved_seconds: float | None = None  # externalauth_refresh_unsaved_seconds
    verdict: str | None = None  # externalauth_validation_total{result}


@dataclasses.dataclass(frozen=True)
class Context:
    """What the meaning of an outcome depends on besides the outcome itself."""

    memory: LinkMemory
    now: dt.datetime
    acted: str | None  # the refresh request as it is now (answered by this refresh)
    consumed_fp: str | None  # the refresh token that was sent
    seed: str  # the link's jitter seed
    backoff_base: float
    backoff_cap: float
    asked_at: dt.datetime | None = None  # the refresh answered a request decided at this time
    rejected_until: dt.datetime | None = None  # CLIENT_REJECTED: the provider's backoff
    rt_warned: str | None = None  # the refresh-token expiry warned about last


def refresh_effects(r: Refresh, ctx: Context) -> Effects:
    """What a refresh's outcome means for its link."""
    mem = ctx.memory
    if ctx.asked_at is not None and r.sent:  # requests are rate-limited by what they cost
        mem = remembering.asked(mem, now=ctx.asked_at)
    mean = _MEANINGS.get(r.outcome)
    # RACED, CLAIMED_ELSEWHERE, NO_CLIENT: nothing to remember; the loop decides again on
    # what the caches hold now.
    done = mean(r, ctx, mem) if mean is not None else Effects(mem)
    return dataclasses.replace(done, refresh_seconds=r.seconds, unsaved_seconds=r.unsaved)


def _persisted(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    assert r.tokens is not None
    expiry = r.tokens.expiry
    events = [Event("Normal", EventReason.REFRESHED, "refreshed the access token" + (
        f"; it expires at {format_time(expiry)}" if expiry else ""))]
    rt_expiry, warned = r.tokens.refresh_token_expiry, None
    if rt_expiry is not None and rt_expiry - ctx.now <= timing.RT_EXPIRING_SOON \
            and format_time(rt_expiry) != ctx.rt_warned:
        warned = format_time(rt_expiry)
        events.append(_warning(EventReason.REFRESH_TOKEN_EXPIRING_SOON,
                               f"the refresh token expires at {warned}: sign in again before then"))
    return Effects(
        remembering.refreshed(mem, now=ctx.now, access_fp=r.tokens.access_token.fingerprint(), acted=ctx.acted),
        count=RefreshResult.SUCCESS, events=tuple(events), rt_warned=warned)


def _superseded(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    return Effects(remembering.settled(mem, acted=ctx.acted), count=RefreshResult.SUPERSEDED, events=(
        Event("Normal", EventReason.REFRESH_SUPERSEDED, "another writer refreshed the token first; its token was kept"),
    ))


def _changed(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    return Effects(remembering.settled(mem, acted=ctx.acted))


def _grant_refused(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    """DEAD_GRANT, PERMANENT: the refresh token is not sent again; the user signs in again."""
    assert ctx.consumed_fp is not None
    events, lost = [], None
    if r.outcome is RefreshOutcome.DEAD_GRANT and mem.unanswered == ctx.consumed_fp:
        # The last exchange of this token got no answer and now the grant is dead: the
        # provider rotated it and its answer was lost in flight (issue #11.4).
        lost = "unanswered"
        events.append(_warning(EventReason.TOKEN_LOST, "the provider's answer to a refresh was lost in flight and "
                               "the grant is gone (the provider had already rotated the token)"))
    events.append(_warning(EventReason.REAUTH_REQUIRED, f"{r.message}: sign in again to write a new token into "
                           "the Secret") if r.outcome is RefreshOutcome.DEAD_GRANT
                  else _warning(EventReason.REFRESH_FAILED, f"{r.message}; not retried: sign in again"))
    return Effects(remembering.grant_dead(mem, refresh_fp=ctx.consumed_fp, acted=ctx.acted),
                   count=RefreshResult.REAUTH_REQUIRED, lost=lost, events=tuple(events))


def _failed(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    """CLIENT_REJECTED, TRANSIENT, CLAIM_FAILED: retried with backoff (a rejected client:
    when the provider's backoff ends)."""
    rejected = r.outcome is RefreshOutcome.CLIENT_REJECTED
    reason = (RefreshableReason.PROVIDER_CREDENTIALS_REJECTED if rejected
              else RefreshableReason.RETRYING_TRANSIENT_ERROR)
    # The token a failure is about: the one sent, unless a new one was stored meanwhile.
    failed_fp = None if r.stored else ctx.consumed_fp
    after = remembering.failed(mem, reason=reason, message=r.message, now=ctx.now, seed=ctx.seed,
                               base=ctx.backoff_base, cap=ctx.backoff_cap,
                               retry_after=None if rejected else r.retry_after,
                               not_before=ctx.rejected_until if rejected else None,
                               acted=ctx.acted, refresh_fp=failed_fp)
    if not rejected:
        after = remembering.unanswered(after, refresh_fp=None if r.answered else failed_fp)
    events = () if mem.failure is not None and mem.failure.message == r.message else (
        _warning(EventReason.REFRESH_FAILED, f"{r.message}; retrying with backoff"),)
    return Effects(after, count=RefreshResult.PROVIDER_REJECTED if rejected else RefreshResult.TRANSIENT_ERROR,
                   events=events)


def _lost(r: Refresh, ctx: Context, mem: LinkMemory) -> Effects:
    """The refresh token is spent and its successor could not be stored: the grant is gone.
    Said loudly, never retried with the spent token."""
    assert ctx.consumed_fp is not None
    return Effects(remembering.lost(mem, refresh_fp=ctx.consumed_fp, why=r.message, acted=ctx.acted),
                   lost=r.lost_reason or "unknown", events=(
                       _warning(EventReason.TOKEN_LOST,
                                f"a token obtained from the provider could not be stored: {r.message}"),))


_MEANINGS = {
    RefreshOutcome.PERSISTED: _persisted,
    RefreshOutcome.SUPERSEDED: _superseded,
    RefreshOutcome.CHANGED: _changed,
    RefreshOutcome.DEAD_GRANT: _grant_refused,
    RefreshOutcome.PERMANENT: _grant_refused,
    RefreshOutcome.CLIENT_REJECTED: _failed,
    RefreshOutcome.TRANSIENT: _failed,
    RefreshOutcome.CLAIM_FAILED: _failed,
    RefreshOutcome.LOST: _lost,
}


def validation_effects(outcome: ValidationOutcome, *, memory: LinkMemory, access_fp: str, digest: str | None,
                       now: dt.datetime, seed: str, cap: float, status_account: str | None) -> Effects:
    """What a validation's verdict means for its link: a failure is said once per reason."""
    after = remembering.validated(memory, outcome=outcome, access_fp=access_fp, now=now, seed=seed, cap=cap,
                                  status_account=status_account, digest=digest)
    assert after.validation is not None
    previous, reason = memory.validation, after.validation.reason
    said = reason == ValidatedReason.VALID or (previous is not None and previous.reason == reason)
    return Effects(after, verdict=outcome.verdict.value,
                   events=() if said else (_warning(EventReason.VALIDATION_FAILED, outcome.message),))
