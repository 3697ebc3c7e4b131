"""The decision for one link: what to do now, and what its status should say. Pure.

*gather → decide → act → record*: the engine gathers a :class:`LinkInput` from its
watch caches and in-memory :class:`LinkMemory`, calls :func:`decide`, acts on the
:class:`Plan`'s action, updates the memory and decides again; when the action is
``NONE`` the plan's status is written if it differs from the stored one.

:func:`decide` runs four ordered chains of small named steps (cert-manager's renewal
policies are the model), each step a pure function that answers or passes:
:data:`GUARDS` (can the link be worked on at all?), :data:`REFRESH` (refresh now, later
or never, and what ``Refreshable`` says), :data:`CHORES` (other work when no refresh is
on) and :data:`NOT_READY` (why ``Ready`` is false); then :func:`wake_at` and
:func:`status_fields`. Read the chains to read the policy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from externalauth.errors import InvalidInputError
from externalauth.model import conditions as cond
from externalauth.model.durations import format_time, parse_time
from externalauth.model.names import PROVIDER_LABEL
from externalauth.model.reasons import (
    ConditionType,
    ReadyReason,
    RefreshableReason,
    Status,
    ValidatedReason,
)
from externalauth.model.specs import LinkSpec, ProviderSpec
from externalauth.model.tokens import TokenSet
from externalauth.policy import timing

DEFAULT_VALIDATION_INTERVAL = dt.timedelta(hours=1)


class Action(enum.StrEnum):
    NONE = "none"
    REFRESH = "refresh"
    VALIDATE = "validate"
    WRITE_FORMATS = "write-formats"


@dataclasses.dataclass(frozen=True)
class ProviderView:
    """The provider as the engine knows it: a parsed spec, or why it is unusable."""

    spec: ProviderSpec | None
    not_ready_message: str | None = None  # set when the provider exists but is unusable
    credentials_rejected_until: dt.datetime | None = None
    clock_skew_message: str | None = None  # the provider's clock is off ours (stable words)


@dataclasses.dataclass(frozen=True)
class Validation:
    reason: ValidatedReason
    message: str
    at: dt.datetime
    token_fingerprint: str
    account: str | None = None
    retry_at: dt.datetime | None = None
    failures: int = 0  # consecutive validations without a verdict
    digest: str | None = None  # the token's salted digest, published in the status


@dataclasses.dataclass(frozen=True)
class Failure:
    reason: RefreshableReason
    message: str
    failures: int
    retry_at: dt.datetime | None
    refresh_fingerprint: str | None = None  # the refresh token that failed (None: unknown)


@dataclasses.dataclass(frozen=True)
class LinkMemory:
    """What the operator learnt about a link since it started (not in the cluster)."""

    last_refresh: dt.datetime | None = None
    last_refresh_fingerprint: str | None = None  # access token we wrote at last_refresh
    failure: Failure | None = None
    dead_grant_fingerprint: str | None = None  # refresh token the provider declared dead
    validation: Validation | None = None
    acted_request: str | None = None
    asked: tuple[dt.datetime, ...] = ()  # when the last refresh requests were acted on
    lost: str | None = None  # why the tokens of the dead grant's refresh could not be stored
    rejected_request: str | None = None  # a refresh request not acted on (too long), said once
    unanswered: str | None = None  # refresh token whose last exchange got no answer back
    # (access-token fingerprint, when first seen, whether it replaced a token seen before)
    seen: tuple[str, dt.datetime, bool] | None = None
    # the access token the Secret held when another replica's live claim on it was last seen
    claim_seen: str | None = None


@dataclasses.dataclass(frozen=True)
class LinkInput:
    now: dt.datetime
    uid: str
    generation: int
    spec: LinkSpec | None
    spec_error: str | None
    provider: ProviderView | None  # None: no such ExternalAuthProvider
    secret_found: bool
    tokens: TokenSet | None
    secret_error: str | None
    refresh_requested: str | None  # the annotation's value
    status: Mapping[str, Any]
    memory: LinkMemory
    validation_interval: dt.timedelta = DEFAULT_VALIDATION_INTERVAL
    formats_stale: bool = False  # the Secret's outputFormats keys do not match its access_token
    format_problem: str | None = None  # why no outputFormats keys can be rendered for this token
    secret_opted_in: bool = True  # the Secret carries externalauth.io/provider=<providerName>
    secret_label: str | None = None  # ... the value it carries instead (None: no such label)
    secret_unwritable: str | None = None  # why the Secret could not take refreshed tokens
    token_digest: str | None = None  # the access token's salted digest (status.validatedTokenDigest)
    refresh_digest: str | None = None  # the refresh token's salted digest (status.deadGrantDigest)
    # the Secret's externalauth.io/dead-grant names its refresh token: a replica was refused it
    secret_marked_dead: bool = False
    claimed_by: str | None = None  # another replica's live claim on the Secret: its holder
    claimed_until: dt.datetime | None = None  # ... and when it ends
    claimed_since: dt.datetime | None = None  # ... and when it was taken (end minus the lease)
    # the labels of the link's namespace (None: not known yet), for spec.namespaceSelector
    namespace_labels: Mapping[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    action: Action
    why: str
    conditions: tuple[cond.Condition, ...]
    fields: Mapping[str, Any]  # status fields other than conditions; None deletes
    wake_at: dt.datetime | None  # when to decide again (None: on the next event only)
    ready: bool = False
    requested: bool = False  # the action answers a refresh request (the annotation)
    # the refresh is not due by the token's expiry (a request, or a Secret without an expiry):
    # it spends the namespace's budget of such calls at this provider (contract §9.16)
    budgeted: bool = False
    # the status is not written now: another replica just refreshed the token, and its
    # status (with its verdict) is on the way; written after VALIDATION_GRACE if it is not
    hold_status: bool = False


def _c(kind: ConditionType, status: Status, reason: str, message: str) -> cond.Condition:
    # str() of a StrEnum is its value, as a plain str (and cheaper than ``.value``: 3-4
    # conditions a decision, two decisions a refresh).
    return cond.Condition(type=str(kind), status=str(status), reason=str(reason), message=message)


def _status_time(status: Mapping[str, Any], key: str) -> dt.datetime | None:
    value = status.get(key)
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except (InvalidInputError, ValueError, OverflowError):
        return None


def _earliest(*moments: dt.datetime | None) -> dt.datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _not_opted_in(spec: LinkSpec, label: str | None) -> str:
    want = f"{PROVIDER_LABEL}={spec.provider_name}"
    if label is None:
        return (f"Secret {spec.secret_name} has not opted in to this provider: add the label {want} "
                "to it (the operator uses only Secrets labelled for the link's provider)")
    return (f"Secret {spec.secret_name} is labelled {PROVIDER_LABEL}={label}, not {want}: "
            "it has opted in to another provider")


def _unchanged(existing: cond.ConditionBody | None) -> cond.Condition:
    """The Refreshable condition as the status has it (NotYetDue when there is none)."""
    if existing is None:
        return _c(ConditionType.REFRESHABLE, Status.TRUE, RefreshableReason.NOT_YET_DUE,
                  "the token is refreshed ahead of its expiry")
    return _c(ConditionType.REFRESHABLE, Status(existing.get("status", "Unknown")),
              existing.get("reason", RefreshableReason.NOT_YET_DUE), existing.get("message", ""))


def _validated_condition(inp: LinkInput, fp: str, validating: bool) -> cond.Condition:
    mem = inp.memory.validation
    if not validating:
        return _c(ConditionType.VALIDATED, Status.UNKNOWN, ValidatedReason.DISABLED,
                  "validation is disabled for this link or provider")
    if mem is not None and mem.token_fingerprint == fp:
        status = {
            ValidatedReason.VALID: Status.TRUE,
            ValidatedReason.INVALID: Status.FALSE,
        }.get(mem.reason, Status.UNKNOWN)
        return _c(ConditionType.VALIDATED, status, mem.reason, mem.message)
    existing = cond.find(inp.status.get("conditions") or [], ConditionType.VALIDATED)
    if existing is not None and existing.get("reason") != ValidatedReason.DISABLED and (
            mem is None or _status_vouches(inp)):
        # Restarted, or another replica validated this very token: trust the status.
        return _c(ConditionType.VALIDATED, Status(existing.get("status", "Unknown")),
                  existing.get("reason", ValidatedReason.PENDING), existing.get("message", ""))
    return _c(ConditionType.VALIDATED, Status.UNKNOWN, ValidatedReason.PENDING,
              "the token has not been validated yet")


def _status_says_dead(inp: LinkInput) -> bool:
    """Does the status say the provider declared this very refresh token dead (any replica,
    before a restart included)? Then nobody sends it again until the Secret changes."""
    return inp.refresh_digest is not None and inp.status.get("deadGrantDigest") == inp.refresh_digest


def _status_vouches(inp: LinkInput) -> bool:
    """Does the status say this very access token was validated (by any replica)?"""
    return inp.token_digest is not None and inp.status.get("validatedTokenDigest") == inp.token_digest


def _refreshed_elsewhere(inp: LinkInput, fp: str) -> bool:
    """Is this token, which replaced one another replica held a claim on, so new that the
    status of the replica that refreshed it may not have arrived yet? Then writing ours
    (Validated Pending, the older verdict) would only be overwritten by it (contract §10)."""
    mem, seen = inp.memory, inp.memory.seen
    return (mem.claim_seen is not None and mem.claim_seen != fp and seen is not None and seen[0] == fp
            and seen[2] and inp.now < seen[1] + timing.VALIDATION_GRACE
            and mem.last_refresh_fingerprint != fp and inp.claimed_until is None and not _status_vouches(inp))


def _validation_due(inp: LinkInput, fp: str) -> tuple[bool, dt.datetime | None]:
    """(due now, when it will be due). Each token is validated once, by one replica: the
    one that refreshed it, or, for a token another writer stored, whoever still sees it
    unvalidated a grace period after first seeing it (contract §10: ≤ 1 validation call
    per refresh, however many replicas)."""
    mem = inp.memory.validation
    if mem is not None and mem.token_fingerprint == fp:
        due = mem.retry_at if mem.retry_at is not None else mem.at + inp.validation_interval
        return due <= inp.now, due
    last = _status_time(inp.status, "lastValidationTime")
    if last is not None and (_status_vouches(inp) or (mem is None and "validatedTokenDigest" not in inp.status)):
        due = last + inp.validation_interval
        return due <= inp.now, due
    seen = inp.memory.seen
    refreshed_here = inp.memory.last_refresh_fingerprint == fp
    if not refreshed_here and seen is not None and seen[0] == fp and seen[2]:
        due = seen[1] + timing.VALIDATION_GRACE
        return due <= inp.now, due
    return True, None


# --- the chain ------------------------------------------------------------------------
# As cert-manager's renewal policies: each question is a small pure step that either
# answers it or passes (None), and each chain is an ordered tuple whose first answer wins.
# The chains, read top to bottom, are the policy (``decide`` at the end only runs them).

T = TypeVar("T")
X = TypeVar("X")


def first(chain: Sequence[Callable[[X], T | None]], subject: X) -> T | None:
    """The answer of the first step in ``chain`` that has one."""
    for step in chain:
        answer = step(subject)
        if answer is not None:
            return answer
    return None


# --- 1. guards: can the link be worked on at all? --------------------------------------

@dataclasses.dataclass(frozen=True)
class Blocked:
    """The link cannot be worked on: Ready=False with this reason, nothing else said."""

    reason: ReadyReason
    message: str
    recheck_at: dt.datetime | None = None  # when to look again (None: on the next event)


def spec_invalid(inp: LinkInput) -> Blocked | None:
    if inp.spec is not None:
        return None
    return Blocked(ReadyReason.INVALID_SPEC, inp.spec_error or "the spec is invalid")


def provider_missing(inp: LinkInput) -> Blocked | None:
    if inp.spec is None or inp.provider is not None:
        return None
    return Blocked(ReadyReason.PROVIDER_NOT_FOUND, f"ExternalAuthProvider {inp.spec.provider_name} does not exist")


def provider_not_ready(inp: LinkInput) -> Blocked | None:
    if inp.spec is None or inp.provider is None or inp.provider.spec is not None:
        return None
    return Blocked(ReadyReason.PROVIDER_NOT_READY,
                   f"ExternalAuthProvider {inp.spec.provider_name} is not ready: "
                   f"{inp.provider.not_ready_message or 'unknown reason'}")


def provider_not_allowed(inp: LinkInput) -> Blocked | None:
    """spec.namespaceSelector (contract §1): a link in a namespace the provider does not
    select sends nothing, and its Secret is not read."""
    if inp.spec is None or inp.provider is None or inp.provider.spec is None \
            or inp.provider.spec.allows(inp.namespace_labels):
        return None
    selector = inp.provider.spec.namespace_selector
    assert selector is not None
    return Blocked(ReadyReason.PROVIDER_NOT_ALLOWED,
                   f"ExternalAuthProvider {inp.spec.provider_name} serves only namespaces matching "
                   f"{selector.describe()}; this namespace does not match, so its tokens are never sent")


def secret_missing(inp: LinkInput) -> Blocked | None:
    if inp.spec is None or inp.secret_found:
        return None
    return Blocked(ReadyReason.SECRET_NOT_FOUND, f"Secret {inp.spec.secret_name} does not exist in this namespace",
                   recheck_at=inp.now + timing.MISSING_SECRET_RECHECK)


def secret_not_opted_in(inp: LinkInput) -> Blocked | None:
    if inp.spec is None or inp.secret_opted_in:
        return None
    return Blocked(ReadyReason.SECRET_NOT_OPTED_IN, _not_opted_in(inp.spec, inp.secret_label))


def secret_unusable(inp: LinkInput) -> Blocked | None:
    if inp.spec is None or inp.tokens is not None:
        return None
    return Blocked(ReadyReason.SECRET_INVALID, f"Secret {inp.spec.secret_name}: {inp.secret_error or 'unusable'}")


def secret_unwritable(inp: LinkInput) -> Blocked | None:
    """A Secret that could not take refreshed tokens blocks only a link that would refresh."""
    if inp.spec is None or inp.secret_unwritable is None or inp.spec.suspend \
            or inp.tokens is None or inp.tokens.refresh_token is None:
        return None
    return Blocked(ReadyReason.SECRET_INVALID, f"Secret {inp.spec.secret_name}: {inp.secret_unwritable}")


#: Why a link cannot be worked on at all; the first that holds wins.
GUARDS: tuple[Callable[[LinkInput], Blocked | None], ...] = (
    spec_invalid,
    provider_missing,
    provider_not_ready,
    provider_not_allowed,
    secret_missing,
    secret_not_opted_in,
    secret_unusable,
    secret_unwritable,
)


def blocked_plan(inp: LinkInput, blocked: Blocked) -> Plan:
    fields: dict[str, Any] = {"nextRefreshTime": None}
    if inp.refresh_requested is not None:
        fields["lastRefreshRequest"] = inp.refresh_requested
    return Plan(
        action=Action.NONE,
        why=blocked.message,
        conditions=(_c(ConditionType.READY, Status.FALSE, blocked.reason, blocked.message),),
        fields=fields,
        wake_at=blocked.recheck_at,
    )


# --- the facts the other chains read -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Facts:
    """A link past the guards, and what its input implies (worked out once, read by every
    step below)."""

    inp: LinkInput
    spec: LinkSpec
    provider: ProviderView
    provider_spec: ProviderSpec
    tokens: TokenSet
    access_fp: str
    refresh_fp: str | None  # None: the Secret has no refresh token
    requested: bool  # a new refresh request that may be honoured now
    request_at: dt.datetime | None  # a new refresh request: when it may be honoured
    issued: dt.datetime | None  # when the access token was issued, if known
    due: dt.datetime | None  # when the refresh is due (None: no expiry known)
    expired: bool
    reauth: bool  # the provider declared the Secret's refresh token dead
    failure: Failure | None  # the last failure, if about the refresh token the Secret holds
    existing_refreshable: cond.ConditionBody | None
    validating: bool
    validated: cond.Condition
    validation_due: bool
    validation_at: dt.datetime | None

    @property
    def now(self) -> dt.datetime:
        return self.inp.now

    @property
    def wants_refresh(self) -> bool:
        """Asked for, due, of unknown expiry, or retrying a failure."""
        return self.requested or self.due is None or self.due <= self.now or self.failure is not None

    @property
    def never_refreshed(self) -> bool:
        """Suspended, without a refresh token, or with a dead one."""
        return self.spec.suspend or self.refresh_fp is None or self.reauth


def facts_of(inp: LinkInput) -> Facts:
    """The facts of a link that passed :data:`GUARDS`."""
    spec, provider, tokens, mem, now = inp.spec, inp.provider, inp.tokens, inp.memory, inp.now
    assert spec is not None and provider is not None and provider.spec is not None and tokens is not None
    access_fp = tokens.access_token.fingerprint()
    refresh_fp = tokens.refresh_token.fingerprint() if tokens.refresh_token else None
    asked = (
        inp.refresh_requested is not None
        and inp.refresh_requested != (mem.acted_request or inp.status.get("lastRefreshRequest"))
    )
    request_at = timing.request_allowed_at(mem.asked, now) if asked else None
    # To the second, as status.lastRefreshTime has it: the replica that refreshed (memory) and
    # the others (status) then plan the same nextRefreshTime, instead of rewriting each other's.
    issued = mem.last_refresh.replace(microsecond=0) if (
        mem.last_refresh is not None and mem.last_refresh_fingerprint == access_fp) else None
    issued = issued or _status_time(inp.status, "lastRefreshTime")
    validating = spec.validate and provider.spec.validate_url is not None
    validation_due, validation_at = _validation_due(inp, access_fp) if validating else (False, None)
    return Facts(
        inp=inp, spec=spec, provider=provider, provider_spec=provider.spec, tokens=tokens,
        access_fp=access_fp, refresh_fp=refresh_fp,
        requested=asked and request_at is not None and request_at <= now,  # else: later (rate limit)
        request_at=request_at,
        issued=issued,
        due=timing.due_at(expiry=tokens.expiry, refresh_before=spec.refresh_before, issued_at=issued,
                          seed=f"{inp.uid}/{format_time(tokens.expiry) if tokens.expiry else ''}"),
        expired=tokens.expiry is not None and tokens.expiry <= now,
        reauth=refresh_fp is not None and (mem.dead_grant_fingerprint == refresh_fp or _status_says_dead(inp)
                                           or inp.secret_marked_dead),
        # A failure is about the refresh token that failed: once the Secret holds another one
        # (another replica or the user refreshed it), the retry decides afresh (issue #11.5).
        failure=mem.failure if mem.failure is not None and mem.failure.refresh_fingerprint in (
            None, refresh_fp) else None,
        existing_refreshable=cond.find(inp.status.get("conditions") or [], ConditionType.REFRESHABLE),
        validating=validating,
        validated=_validated_condition(inp, access_fp, validating),
        validation_due=validation_due,
        validation_at=validation_at,
    )


# --- 2. refresh: now, later or never, and what Refreshable says --------------------------

@dataclasses.dataclass(frozen=True)
class Refreshing:
    condition: cond.Condition  # Refreshable
    action: Action = Action.NONE  # NONE or REFRESH
    why: str = "nothing to do"
    next_refresh: dt.datetime | None = None  # when to look again for it (None: on the next event)
    # status.nextRefreshTime stays as the status has it (another replica's refresh is in
    # progress: its plan is not ours to overwrite, and the write would wake every replica)
    keep_next_refresh: bool = False


def _refreshable(status: Status, reason: str, message: str) -> cond.Condition:
    return _c(ConditionType.REFRESHABLE, status, reason, message)


def suspended(f: Facts) -> Refreshing | None:
    if not f.spec.suspend:
        return None
    return Refreshing(_refreshable(Status.FALSE, RefreshableReason.SUSPENDED, "refreshing is suspended (spec.suspend)"))


def no_refresh_token(f: Facts) -> Refreshing | None:
    if f.refresh_fp is not None:
        return None
    return Refreshing(_refreshable(Status.FALSE, RefreshableReason.NO_REFRESH_TOKEN,
                                   "the Secret has no refresh_token: the token is validated, never refreshed"))


def grant_dead(f: Facts) -> Refreshing | None:
    if not f.reauth:
        return None
    return Refreshing(_refreshable(Status.FALSE, RefreshableReason.REAUTH_REQUIRED,
                                   "the provider refused the refresh token: sign in again to write a new one"))


def client_rejected(f: Facts) -> Refreshing | None:
    """The provider refused the OAuth client: every link of it waits, a refresh request too
    (contract §9.16: requests never skip a provider's backoff)."""
    until = f.provider.credentials_rejected_until
    if until is None or until <= f.now:
        return None
    return Refreshing(_refreshable(Status.FALSE, RefreshableReason.PROVIDER_CREDENTIALS_REJECTED,
                                   f"the provider rejected the OAuth client of ExternalAuthProvider "
                                   f"{f.provider_spec.name}; retrying with backoff"), next_refresh=until)


def backing_off(f: Facts) -> Refreshing | None:
    """A failed refresh waits for its backoff to end, a refresh request too (contract §9.16)."""
    if f.failure is None or f.failure.retry_at is None or f.failure.retry_at <= f.now:
        return None
    return Refreshing(_refreshable(Status.FALSE, f.failure.reason, f.failure.message),
                      next_refresh=f.failure.retry_at)


def claimed_elsewhere(f: Facts) -> Refreshing | None:
    """Another replica holds a live claim on the Secret: wait for it to end. A young claim
    is a refresh in progress elsewhere, as replicas have all the time: not worth a word."""
    until = f.inp.claimed_until
    if until is None or until <= f.now or not f.wants_refresh:
        return None
    since = f.inp.claimed_since
    if since is None or f.now - since >= timing.CLAIM_REPORT_AFTER:
        condition = _refreshable(Status.FALSE, RefreshableReason.CLAIMED_ELSEWHERE,
                                 f"another replica ({f.inp.claimed_by}) is refreshing the token; "
                                 f"its claim ends at {format_time(until)}")
        return Refreshing(condition, next_refresh=until + timing.CLAIM_GRACE)
    return Refreshing(_unchanged(f.existing_refreshable), next_refresh=until + timing.CLAIM_GRACE,
                      keep_next_refresh=True)


def refresh_now(f: Facts) -> Refreshing | None:
    """Until the refresh is done, Refreshable stays as it is (or says a refresh is on)."""
    if not f.wants_refresh:
        return None
    why = ("refresh requested by annotation" if f.requested
           else "retrying after a failed refresh" if f.failure is not None
           else "no expiry known: refresh to learn it" if f.due is None
           else "the token is due for refresh")
    return Refreshing(_unchanged(f.existing_refreshable), action=Action.REFRESH, why=why)


def not_yet_due(f: Facts) -> Refreshing:
    """The last step: refreshed later, at the due time (or when a rate-limited request may go)."""
    clamp_note = (" (refreshBefore is more than half the token's lifetime: it is refreshed at half "
                  "its lifetime instead)") if timing.clamped(
        expiry=f.tokens.expiry, refresh_before=f.spec.refresh_before, issued_at=f.issued) else ""
    mem, existing = f.inp.memory, f.existing_refreshable
    if mem.last_refresh is not None and mem.last_refresh_fingerprint == f.access_fp:
        condition = _refreshable(Status.TRUE, RefreshableReason.REFRESHED,
                                 "the operator refreshed the token and keeps it fresh" + clamp_note)
    elif existing is not None and existing.get("status") == Status.TRUE:
        condition = _refreshable(Status.TRUE, existing.get("reason", RefreshableReason.NOT_YET_DUE),
                                 existing.get("message", ""))
    else:
        condition = _refreshable(Status.TRUE, RefreshableReason.NOT_YET_DUE,
                                 "the token is refreshed ahead of its expiry" + clamp_note)
    return Refreshing(condition, next_refresh=_earliest(f.due, f.request_at))


#: Is the token refreshed now, later or never; the first that holds wins, else
#: :func:`not_yet_due`.
REFRESH: tuple[Callable[[Facts], Refreshing | None], ...] = (
    suspended,
    no_refresh_token,
    grant_dead,
    client_rejected,
    backing_off,
    claimed_elsewhere,
    refresh_now,
)


# --- 3. chores: other work, when no refresh is on ---------------------------------------

@dataclasses.dataclass(frozen=True)
class Chore:
    action: Action
    why: str


def formats_stale(f: Facts) -> Chore | None:
    if not f.inp.formats_stale:
        return None
    return Chore(Action.WRITE_FORMATS, "the output format keys do not match the token")


def validation_due(f: Facts) -> Chore | None:
    """An expired token that will be refreshed is not validated first."""
    if not f.validation_due or (f.expired and not f.never_refreshed):
        return None
    return Chore(Action.VALIDATE, "the token is due for validation")


#: Other work when the token is not being refreshed; the first that holds wins.
CHORES: tuple[Callable[[Facts], Chore | None], ...] = (
    formats_stale,
    validation_due,
)


# --- 4. ready: is the token in the Secret usable? ---------------------------------------

def _not_ready(reason: ReadyReason, message: str) -> cond.Condition:
    return _c(ConditionType.READY, Status.FALSE, reason, message)


def token_lost(f: Facts) -> cond.Condition | None:
    if not f.reauth or f.inp.memory.lost is None:
        return None
    return _not_ready(ReadyReason.SECRET_INVALID,
                      f"a refreshed token could not be stored ({f.inp.memory.lost}): sign in again")


def reauth_required(f: Facts) -> cond.Condition | None:
    if not f.reauth:
        return None
    return _not_ready(ReadyReason.REAUTH_REQUIRED, "the provider refused the refresh token: sign in again")


def token_expired(f: Facts) -> cond.Condition | None:
    if not f.expired:
        return None
    return _not_ready(ReadyReason.TOKEN_EXPIRED, "the access token in the Secret has expired")


def token_rejected(f: Facts) -> cond.Condition | None:
    if f.validated.reason != ValidatedReason.INVALID:
        return None
    return _not_ready(ReadyReason.TOKEN_REJECTED, "the provider rejected the access token")


def token_current(f: Facts) -> cond.Condition:
    """The last step: Ready, with what is worth knowing beside it."""
    return _c(ConditionType.READY, Status.TRUE, ReadyReason.TOKEN_CURRENT,
              "the Secret holds a current access token" + (
                  f"; no output format keys: {f.inp.format_problem}" if f.inp.format_problem else "") + (
                  f"; {f.provider.clock_skew_message}" if f.provider.clock_skew_message else ""))


#: Why the link is not Ready; the first that holds wins, else :func:`token_current`.
NOT_READY: tuple[Callable[[Facts], cond.Condition | None], ...] = (
    token_lost,
    reauth_required,
    token_expired,
    token_rejected,
)


# --- 5. when to look again, and the status fields ----------------------------------------

def wake_at(f: Facts, *, action: Action, next_refresh: dt.datetime | None) -> dt.datetime | None:
    """With nothing to do, the link is looked at again at the earliest of its next refresh,
    its next validation and its expiry (so that Ready flips to TokenExpired on time). An
    expired token that will be refreshed waits for its refresh, not for a validation (one
    overdue would wake the link at once, again and again, until the refresh)."""
    if action is not Action.NONE:
        return next_refresh
    wake = next_refresh
    if f.validating and not (f.expired and not f.never_refreshed):
        wake = _earliest(wake, f.validation_at)
    if not f.expired and f.tokens.expiry is not None:
        wake = _earliest(wake, f.tokens.expiry)
    return wake


def status_fields(f: Facts, *, action: Action, next_refresh: dt.datetime | None) -> dict[str, Any]:
    """The status fields other than conditions (None deletes one)."""
    tokens, mem = f.tokens, f.inp.memory
    fields: dict[str, Any] = {
        "expiresAt": format_time(tokens.expiry) if tokens.expiry else None,
        "refreshTokenExpiresAt": (
            format_time(tokens.refresh_token_expiry) if tokens.refresh_token_expiry else None
        ),
        "nextRefreshTime": (format_time(next_refresh) if next_refresh and not f.never_refreshed else None),
        # The dead-grant verdict, where every replica sees it; gone once the token changed.
        "deadGrantDigest": f.inp.refresh_digest if f.reauth else None,
    }
    if mem.last_refresh is not None:
        fields["lastRefreshTime"] = format_time(mem.last_refresh)
    v = mem.validation
    if v is not None and v.token_fingerprint == f.access_fp and v.reason in (
        ValidatedReason.VALID, ValidatedReason.INVALID
    ):  # a verdict on an older token is not published over another replica's newer one
        fields["lastValidationTime"] = format_time(v.at)
        if v.digest:
            fields["validatedTokenDigest"] = v.digest
        if v.account:
            fields["account"] = v.account
    acted = mem.acted_request
    if f.inp.refresh_requested is not None and action is Action.NONE and f.never_refreshed:
        acted = f.inp.refresh_requested  # cannot be honoured: acknowledge it
    if acted is not None:
        fields["lastRefreshRequest"] = acted
    return fields


# --- the decision -------------------------------------------------------------------------

def decide(inp: LinkInput) -> Plan:
    """Guards, then facts; refresh (now, later, never), else a chore; Ready; when next."""
    blocked = first(GUARDS, inp)
    if blocked is not None:
        return blocked_plan(inp, blocked)
    f = facts_of(inp)
    refreshing = first(REFRESH, f) or not_yet_due(f)
    action, why = refreshing.action, refreshing.why
    if action is Action.NONE:
        chore = first(CHORES, f)
        if chore is not None:
            action, why = chore.action, chore.why
    ready = first(NOT_READY, f) or token_current(f)
    fields = status_fields(f, action=action, next_refresh=refreshing.next_refresh)
    if refreshing.keep_next_refresh:
        shown = inp.status.get("nextRefreshTime")
        fields["nextRefreshTime"] = shown if isinstance(shown, str) else None
    return Plan(
        action=action,
        why=why,
        conditions=(ready, refreshing.condition, f.validated),
        fields=fields,
        wake_at=wake_at(f, action=action, next_refresh=refreshing.next_refresh),
        ready=ready.status == Status.TRUE,
        requested=f.requested and action is Action.REFRESH,
        budgeted=action is Action.REFRESH and f.failure is None and (f.requested or f.due is None),
        hold_status=action is Action.NONE and _refreshed_elsewhere(inp, f.access_fp),
    )


def render_status(
    plan: Plan, *, existing: Mapping[str, Any], now: dt.datetime, generation: int
) -> dict[str, Any]:
    """The full status object the plan asks for (compare with ``existing`` before writing)."""
    out: dict[str, Any] = {k: v for k, v in existing.items() if k != "conditions"}
    for key, value in plan.fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    out["observedGeneration"] = generation
    out["conditions"] = cond.merge(
        existing.get("conditions") or [], plan.conditions, now=now, generation=generation
    )
    return out
