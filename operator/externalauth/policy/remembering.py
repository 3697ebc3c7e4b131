"""What the operator remembers about a link after a refresh or a validation, and when
it tries again. Pure: ``now`` and jitter seeds are passed in."""

from __future__ import annotations

import dataclasses
import datetime as dt

from externalauth.model.reasons import RefreshableReason, ValidatedReason
from externalauth.policy import timing
from externalauth.policy.classifying import ValidationOutcome, ValidationVerdict
from externalauth.policy.deciding import Failure, LinkMemory, Validation

VALIDATED_REASON = {
    ValidationVerdict.VALID: ValidatedReason.VALID,
    ValidationVerdict.INVALID: ValidatedReason.INVALID,
    ValidationVerdict.RATE_LIMITED: ValidatedReason.RATE_LIMITED,
    ValidationVerdict.UNREACHABLE: ValidatedReason.UNREACHABLE,
}
_NO_VERDICT = frozenset({ValidatedReason.RATE_LIMITED, ValidatedReason.UNREACHABLE})


def refreshed(mem: LinkMemory, *, now: dt.datetime, access_fp: str, acted: str | None) -> LinkMemory:
    return dataclasses.replace(mem, last_refresh=now, last_refresh_fingerprint=access_fp,
                               failure=None, acted_request=acted)


def settled(mem: LinkMemory, *, acted: str | None) -> LinkMemory:
    """Another writer refreshed, or the Secret changed: no failure to retry."""
    return dataclasses.replace(mem, failure=None, acted_request=acted)


def grant_dead(mem: LinkMemory, *, refresh_fp: str, acted: str | None) -> LinkMemory:
    """The provider will not take this refresh token again: wait for a new one."""
    return dataclasses.replace(mem, dead_grant_fingerprint=refresh_fp, lost=None, failure=None,
                               acted_request=acted)


def asked(mem: LinkMemory, *, now: dt.datetime) -> LinkMemory:
    """A refresh request is being acted on (requests are rate-limited per link)."""
    recent = tuple(t for t in mem.asked if t > now - timing.REQUEST_WINDOW)[-timing.REQUEST_BURST:]
    return dataclasses.replace(mem, asked=(*recent, now))


def lost(mem: LinkMemory, *, refresh_fp: str, why: str, acted: str | None) -> LinkMemory:
    """The provider answered but the Secret could not take the tokens: the refresh token
    is spent, so the link waits for a new sign-in and says why."""
    return dataclasses.replace(mem, dead_grant_fingerprint=refresh_fp, lost=why, failure=None,
                               acted_request=acted)


def unanswered(mem: LinkMemory, *, refresh_fp: str | None) -> LinkMemory:
    """Remember a refresh token whose exchange got no answer (None: the last one did)."""
    return dataclasses.replace(mem, unanswered=refresh_fp)


def request_rejected(mem: LinkMemory, *, fingerprint: str) -> LinkMemory:
    return dataclasses.replace(mem, rejected_request=fingerprint)


def failed(mem: LinkMemory, *, reason: RefreshableReason, message: str, now: dt.datetime,
           seed: str, base: float, cap: float, retry_after: float | None = None,
           not_before: dt.datetime | None = None, acted: str | None,
           refresh_fp: str | None = None) -> LinkMemory:
    """A refresh failed in a way worth retrying: exponential backoff from ``base`` to
    ``cap``, never before the provider's Retry-After (capped) or ``not_before``."""
    same = mem.failure is not None and mem.failure.refresh_fingerprint in (None, refresh_fp)
    failures = (mem.failure.failures if mem.failure is not None and same else 0) + 1
    wait = timing.backoff(failures=failures, seed=seed, base=base, cap=cap, retry_after=retry_after)
    retry_at = timing.after(now, wait)
    if not_before is not None:
        retry_at = not_before
    return dataclasses.replace(mem, failure=Failure(reason, message, failures, retry_at, refresh_fp),
                               acted_request=acted)


def seen(mem: LinkMemory, *, access_fp: str, now: dt.datetime, claimed_elsewhere: bool = False) -> LinkMemory:
    """Remember when this replica first saw an access token (unchanged if already seen), and
    whether it replaced one seen before (a rotation, by this replica or another writer);
    and the token another replica's live claim was seen on (it is refreshing it)."""
    if claimed_elsewhere and mem.claim_seen != access_fp:
        mem = dataclasses.replace(mem, claim_seen=access_fp)
    if mem.seen is not None and mem.seen[0] == access_fp:
        return mem
    return dataclasses.replace(mem, seen=(access_fp, now, mem.seen is not None))


def validated(mem: LinkMemory, *, outcome: ValidationOutcome, access_fp: str, now: dt.datetime,
              seed: str, cap: float, status_account: str | None, digest: str | None = None) -> LinkMemory:
    """The provider's verdict on the token; without one (rate-limited, unreachable), when
    to ask again."""
    reason = VALIDATED_REASON[outcome.verdict]
    previous = mem.validation
    failures = 0
    retry_at = None
    if reason in _NO_VERDICT:
        failures = (previous.failures if previous and previous.reason in _NO_VERDICT else 0) + 1
        wait = timing.validation_retry(failures=failures, seed=seed, retry_after=outcome.retry_after,
                                       cap=cap)
        retry_at = timing.after(now, wait)
    account = outcome.account or (previous.account if previous else None) or status_account
    return dataclasses.replace(mem, validation=Validation(
        reason=reason, message=outcome.message, at=now, token_fingerprint=access_fp,
        account=account, retry_at=retry_at, failures=failures, digest=digest))
