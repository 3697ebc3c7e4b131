"""The decision for one link: what to do now, and what its status should say. Pure.

*gather → decide → act → record*: the engine gathers a :class:`LinkInput` from its
watch caches and in-memory :class:`LinkMemory`, calls :func:`decide`, acts on the
:class:`Plan`'s action, updates the memory and decides again; when the action is
``NONE`` the plan's status is written if it differs from the stored one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

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
    claimed_by: str | None = None  # another replica's live claim on the Secret: its holder
    claimed_until: dt.datetime | None = None  # ... and when it ends
    claimed_since: dt.datetime | None = None  # ... and when it was taken (end minus the lease)


@dataclasses.dataclass(frozen=True)
class Plan:
    action: Action
    why: str
    conditions: tuple[cond.Condition, ...]
    fields: Mapping[str, Any]  # status fields other than conditions; None deletes
    wake_at: dt.datetime | None  # when to decide again (None: on the next event only)
    ready: bool = False
    requested: bool = False  # the action answers a refresh request (the annotation)


def _c(kind: ConditionType, status: Status, reason: str, message: str) -> cond.Condition:
    return cond.Condition(type=kind.value, status=status.value, reason=str(reason), message=message)


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


def _blocked(inp: LinkInput, reason: ReadyReason, message: str,
             *, wake_at: dt.datetime | None = None) -> Plan:
    fields: dict[str, Any] = {"nextRefreshTime": None}
    if inp.refresh_requested is not None:
        fields["lastRefreshRequest"] = inp.refresh_requested
    return Plan(
        action=Action.NONE,
        why=message,
        conditions=(_c(ConditionType.READY, Status.FALSE, reason, message),),
        fields=fields,
        wake_at=wake_at,
    )


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


def _status_vouches(inp: LinkInput) -> bool:
    """Does the status say this very access token was validated (by any replica)?"""
    return inp.token_digest is not None and inp.status.get("validatedTokenDigest") == inp.token_digest


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


def decide(inp: LinkInput) -> Plan:
    if inp.spec is None:
        return _blocked(inp, ReadyReason.INVALID_SPEC, inp.spec_error or "the spec is invalid")
    if inp.provider is None:
        return _blocked(inp, ReadyReason.PROVIDER_NOT_FOUND,
                        f"ExternalAuthProvider {inp.spec.provider_name} does not exist")
    if inp.provider.spec is None:
        return _blocked(inp, ReadyReason.PROVIDER_NOT_READY,
                        f"ExternalAuthProvider {inp.spec.provider_name} is not ready: "
                        f"{inp.provider.not_ready_message or 'unknown reason'}")
    if not inp.secret_found:
        return _blocked(inp, ReadyReason.SECRET_NOT_FOUND,
                        f"Secret {inp.spec.secret_name} does not exist in this namespace",
                        wake_at=inp.now + timing.MISSING_SECRET_RECHECK)
    if not inp.secret_opted_in:
        return _blocked(inp, ReadyReason.SECRET_NOT_OPTED_IN, _not_opted_in(inp.spec, inp.secret_label))
    if inp.tokens is None:
        return _blocked(inp, ReadyReason.SECRET_INVALID,
                        f"Secret {inp.spec.secret_name}: {inp.secret_error or 'unusable'}")
    if inp.secret_unwritable is not None and inp.tokens.refresh_token is not None and not inp.spec.suspend:
        return _blocked(inp, ReadyReason.SECRET_INVALID,
                        f"Secret {inp.spec.secret_name}: {inp.secret_unwritable}")

    spec, provider, tokens, mem, now = inp.spec, inp.provider.spec, inp.tokens, inp.memory, inp.now
    access_fp = tokens.access_token.fingerprint()
    refresh_fp = tokens.refresh_token.fingerprint() if tokens.refresh_token else None
    asked = (
        inp.refresh_requested is not None
        and inp.refresh_requested != (mem.acted_request or inp.status.get("lastRefreshRequest"))
    )
    request_at = timing.request_allowed_at(mem.asked, now) if asked else None
    requested = asked and request_at is not None and request_at <= now  # else: later (rate limit)
    issued = mem.last_refresh if mem.last_refresh_fingerprint == access_fp else None
    issued = issued or _status_time(inp.status, "lastRefreshTime")
    due = timing.due_at(
        expiry=tokens.expiry,
        refresh_before=spec.refresh_before,
        issued_at=issued,
        seed=f"{inp.uid}/{format_time(tokens.expiry) if tokens.expiry else ''}",
    )
    clamp_note = (" (refreshBefore is more than half the token's lifetime: it is refreshed at half "
                  "its lifetime instead)") if timing.clamped(
        expiry=tokens.expiry, refresh_before=spec.refresh_before, issued_at=issued) else ""
    expired = tokens.expiry is not None and tokens.expiry <= now
    reauth = refresh_fp is not None and mem.dead_grant_fingerprint == refresh_fp
    # A failure is about the refresh token that failed: once the Secret holds another one
    # (another replica or the user refreshed it), the retry decides afresh (issue #11.5).
    failure = mem.failure if mem.failure is not None and mem.failure.refresh_fingerprint in (
        None, refresh_fp) else None

    action, why, wake, next_refresh = Action.NONE, "nothing to do", None, None
    existing_ref = cond.find(inp.status.get("conditions") or [], ConditionType.REFRESHABLE)
    if spec.suspend:
        refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE, RefreshableReason.SUSPENDED,
                         "refreshing is suspended (spec.suspend)")
    elif refresh_fp is None:
        refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE, RefreshableReason.NO_REFRESH_TOKEN,
                         "the Secret has no refresh_token: the token is validated, never refreshed")
    elif reauth:
        refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE, RefreshableReason.REAUTH_REQUIRED,
                         "the provider refused the refresh token: sign in again to write a new one")
    elif (
        inp.provider.credentials_rejected_until is not None
        and inp.provider.credentials_rejected_until > now
        and not requested
    ):
        refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE,
                         RefreshableReason.PROVIDER_CREDENTIALS_REJECTED,
                         f"the provider rejected the OAuth client of ExternalAuthProvider "
                         f"{provider.name}; retrying with backoff")
        wake = inp.provider.credentials_rejected_until
        next_refresh = wake
    elif failure is not None and failure.retry_at is not None and failure.retry_at > now \
            and not requested:
        refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE, failure.reason, failure.message)
        wake = next_refresh = failure.retry_at
    elif (inp.claimed_until is not None and inp.claimed_until > now
          and (requested or due is None or due <= now or failure is not None)):
        if inp.claimed_since is None or now - inp.claimed_since >= timing.CLAIM_REPORT_AFTER:
            refreshable = _c(ConditionType.REFRESHABLE, Status.FALSE, RefreshableReason.CLAIMED_ELSEWHERE,
                             f"another replica ({inp.claimed_by}) is refreshing the token; "
                             f"its claim ends at {format_time(inp.claimed_until)}")
        else:  # a refresh in progress elsewhere, as replicas have all the time: no status flap
            refreshable = _unchanged(existing_ref)
        wake = next_refresh = inp.claimed_until + timing.CLAIM_GRACE
    elif requested or due is None or due <= now or failure is not None:
        action = Action.REFRESH
        why = ("refresh requested by annotation" if requested
               else "retrying after a failed refresh" if failure is not None
               else "no expiry known: refresh to learn it" if due is None
               else "the token is due for refresh")
        # Until the action is done the condition stays as it is (or says a refresh is on).
        refreshable = _unchanged(existing_ref)
    else:
        wake = next_refresh = _earliest(due, request_at)
        if mem.last_refresh is not None and mem.last_refresh_fingerprint == access_fp:
            refreshable = _c(ConditionType.REFRESHABLE, Status.TRUE, RefreshableReason.REFRESHED,
                             "the operator refreshed the token and keeps it fresh" + clamp_note)
        elif existing_ref is not None and existing_ref.get("status") == Status.TRUE:
            refreshable = _c(ConditionType.REFRESHABLE, Status.TRUE,
                             existing_ref.get("reason", RefreshableReason.NOT_YET_DUE),
                             existing_ref.get("message", ""))
        else:
            refreshable = _c(ConditionType.REFRESHABLE, Status.TRUE, RefreshableReason.NOT_YET_DUE,
                             "the token is refreshed ahead of its expiry" + clamp_note)

    if action is Action.NONE and inp.formats_stale:
        action, why = Action.WRITE_FORMATS, "the output format keys do not match the token"

    validating = spec.validate and provider.validate_url is not None
    if action is Action.NONE and validating:
        v_due, v_when = _validation_due(inp, access_fp)
        if v_due and not (expired and not reauth and refresh_fp is not None and not spec.suspend):
            action, why = Action.VALIDATE, "the token is due for validation"
        else:
            wake = _earliest(wake, v_when)

    validated = _validated_condition(inp, access_fp, validating)
    if reauth and mem.lost is not None:
        ready = _c(ConditionType.READY, Status.FALSE, ReadyReason.SECRET_INVALID,
                   f"a refreshed token could not be stored ({mem.lost}): sign in again")
    elif reauth:
        ready = _c(ConditionType.READY, Status.FALSE, ReadyReason.REAUTH_REQUIRED,
                   "the provider refused the refresh token: sign in again")
    elif expired:
        ready = _c(ConditionType.READY, Status.FALSE, ReadyReason.TOKEN_EXPIRED,
                   "the access token in the Secret has expired")
    elif validated.reason == ValidatedReason.INVALID:
        ready = _c(ConditionType.READY, Status.FALSE, ReadyReason.TOKEN_REJECTED,
                   "the provider rejected the access token")
    else:
        ready = _c(ConditionType.READY, Status.TRUE, ReadyReason.TOKEN_CURRENT,
                   "the Secret holds a current access token" + (
                       f"; no output format keys: {inp.format_problem}" if inp.format_problem else "") + (
                       f"; {inp.provider.clock_skew_message}" if inp.provider.clock_skew_message else ""))
    if not expired and tokens.expiry is not None and action is Action.NONE:
        wake = _earliest(wake, tokens.expiry)  # flip Ready to TokenExpired on time

    fields: dict[str, Any] = {
        "expiresAt": format_time(tokens.expiry) if tokens.expiry else None,
        "refreshTokenExpiresAt": (
            format_time(tokens.refresh_token_expiry) if tokens.refresh_token_expiry else None
        ),
        "nextRefreshTime": format_time(next_refresh) if next_refresh and not spec.suspend else None,
    }
    if mem.last_refresh is not None:
        fields["lastRefreshTime"] = format_time(mem.last_refresh)
    if mem.validation is not None and mem.validation.token_fingerprint == access_fp and mem.validation.reason in (
        ValidatedReason.VALID, ValidatedReason.INVALID
    ):  # a verdict on an older token is not published over another replica's newer one
        fields["lastValidationTime"] = format_time(mem.validation.at)
        if mem.validation.digest:
            fields["validatedTokenDigest"] = mem.validation.digest
        if mem.validation.account:
            fields["account"] = mem.validation.account
    acted = mem.acted_request
    if inp.refresh_requested is not None and action is Action.NONE and (
        spec.suspend or refresh_fp is None or reauth
    ):
        acted = inp.refresh_requested  # cannot be honoured: acknowledge it
    if acted is not None:
        fields["lastRefreshRequest"] = acted
    if spec.suspend or refresh_fp is None or reauth:
        fields["nextRefreshTime"] = None
    return Plan(
        action=action,
        why=why,
        conditions=(ready, refreshable, validated),
        fields=fields,
        wake_at=wake,
        ready=ready.status == Status.TRUE,
        requested=requested and action is Action.REFRESH,
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
