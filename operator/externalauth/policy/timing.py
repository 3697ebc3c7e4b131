"""Every "when": when a refresh is due, how long to back off, when to look again.
Pure: ``now`` and jitter seeds are passed in; the engine never invents a delay."""

from __future__ import annotations

import datetime as dt
import hashlib

MAX_SPREAD = 0.10  # refresh up to 10% of the token lifetime early, to spread load
#: A link is refreshed at most once per this fraction of its token's lifetime (§9.12).
MIN_LIFETIME_FRACTION = 0.5
#: Refresh requests (the annotation) honoured per link: REQUEST_BURST per REQUEST_WINDOW.
REQUEST_BURST = 3
REQUEST_WINDOW = dt.timedelta(seconds=60)
#: Longest wait a provider's Retry-After (or rate-limit reset) can impose (contract §9.14).
MAX_RETRY_AFTER = 3600.0
#: How long an endpoint that answered 429 without saying until when is left alone.
RATE_LIMIT_DEFAULT_WAIT = 60.0
#: Longest one rate-limited answer holds a provider's endpoint for every link (contract
#: §9.16). The link whose call was answered waits the provider's whole Retry-After (up to
#: MAX_RETRY_AFTER); every other tenant's links try again after at most this long, one
#: call among them finding out whether the limit still holds (and holding it again if
#: so): a Retry-After of an hour, or a forged/odd one, costs every tenant 5 minutes at a
#: time, not an hour, at the price of about 12 probing calls an hour.
MAX_ENDPOINT_HOLD = 300.0
#: An action that could not be done now (another replica's claim, say): look again soon;
#: the Secret's watch event usually comes first.
RETRY_SOON = dt.timedelta(seconds=2)
#: A status write that failed is tried again after this long.
STATUS_RETRY = dt.timedelta(seconds=5)
#: A link whose Secret does not exist (yet) is looked at again after this long.
MISSING_SECRET_RECHECK = dt.timedelta(seconds=30)
#: Another replica's claim is reported on the link (Refreshable=False ClaimedElsewhere) only
#: once it has been held this long: a refresh takes well under a second, so a claim this
#: old means a slow provider or a crashed replica; a younger one is not worth a status write.
CLAIM_REPORT_AFTER = dt.timedelta(seconds=10)
#: A claim that ends at T is taken over at T + this, if its holder never released it.
CLAIM_GRACE = dt.timedelta(seconds=0.5)
#: A token call must end this long before its claim's lease does (room to persist the
#: answer): its deadline is capped at the lease left minus this (contract §9.15).
LEASE_SEND_MARGIN = 5.0
#: A token call with less time than this before that cap is not sent at all: the claim ran
#: low while the call waited for its turn; it is a transient outcome, retried with a fresh
#: claim (contract §9.15).
MIN_SEND_WINDOW = 2.0


def call_budget(*, send_before: float | None, now: float, deadline: float) -> float | None:
    """Seconds a token call may take when it is about to be sent at ``now`` (pure): the
    call's ``deadline``, capped so that it ends by ``send_before`` (the claim's lease end
    minus :data:`LEASE_SEND_MARGIN`, on the same monotonic scale as ``now``); None when
    less than :data:`MIN_SEND_WINDOW` is left, and the call must not be sent (§9.15)."""
    if send_before is None:
        return deadline
    window = send_before - now
    if window < MIN_SEND_WINDOW:
        return None
    return min(deadline, window)


#: A failed OIDC discovery is tried again (in the background, never on a refresh) at most
#: this often.
DISCOVERY_RETRY = 30.0
#: A token another writer stored is validated only if no replica has recorded a verdict
#: on it this long after this replica first saw it.
VALIDATION_GRACE = dt.timedelta(seconds=30)
#: A refresh token that expires within this long is worth a warning (once per expiry).
RT_EXPIRING_SOON = dt.timedelta(days=7)
#: Validation that got no verdict backs off from this base.
VALIDATION_BACKOFF_BASE = 30.0
#: A reconcile that crashed (a bug) is tried again after this long.
CRASH_RETRY = dt.timedelta(seconds=30)

# --- the operator's own housekeeping: start-up, shut-down, watches ------------------------
#: The start-up check that the API server serves our CRDs gives up after this long (seconds).
PREFLIGHT_TIMEOUT = 10.0
#: A claim is renewed before sending when less than the provider's deadline plus this is
#: left of its lease (seconds).
CALL_BUDGET_MARGIN = 5.0
#: Longest wait at start-up for the first listing of the labelled Secrets and the links.
SYNC_TIMEOUT = 300.0
#: At shut-down, longest wait for the events and provider reconciles still running (the
#: token writes have their own, longer grace: ``Settings.shutdown_grace``).
BACKGROUND_GRACE = 5.0
#: How often a watch thread that waits for room in a full inbox looks whether it was closed.
INBOX_WAIT = 1.0
#: Our watches (links, Secrets): the API server ends a watch after WATCH_SERVER_TIMEOUT
#: seconds; a connection silent for WATCH_READ_TIMEOUT is given up; connecting, sooner.
WATCH_SERVER_TIMEOUT = 290
WATCH_READ_TIMEOUT = 320.0
WATCH_CONNECT_TIMEOUT = 10.0
#: kopf's watch (the providers), in kopf's terms: the same, a little longer.
KOPF_WATCH_SERVER_TIMEOUT = 300
KOPF_WATCH_CLIENT_TIMEOUT = 330


def fraction(seed: str) -> float:
    """A deterministic number in [0, 1) from a seed string (stable across restarts)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def due_at(
    *,
    expiry: dt.datetime | None,
    refresh_before: dt.timedelta,
    issued_at: dt.datetime | None,
    seed: str,
) -> dt.datetime | None:
    """When a refresh is due: ``expiry - refreshBefore``, minus a jitter of at most 10%
    of the token's lifetime (known only when we saw it issued). Never later — and never
    before half the lifetime has passed (contract §9.12: a ``refreshBefore`` at or beyond
    the lifetime would otherwise make every new token due at once).
    ``None`` means "no expiry known"; the caller refreshes at once to learn it."""
    if expiry is None:
        return None
    due = expiry - refresh_before
    if issued_at is not None and issued_at < expiry:
        lifetime = expiry - issued_at
        due -= lifetime * (MAX_SPREAD * fraction(seed))
        due = max(due, issued_at + lifetime * MIN_LIFETIME_FRACTION)
    return due


def clamped(*, expiry: dt.datetime | None, refresh_before: dt.timedelta,
            issued_at: dt.datetime | None) -> bool:
    """Is ``refreshBefore`` too long for this token, so that :func:`due_at` clamps it?"""
    if expiry is None or issued_at is None or issued_at >= expiry:
        return False
    return refresh_before > (expiry - issued_at) * (1 - MIN_LIFETIME_FRACTION)


def request_allowed_at(asked: tuple[dt.datetime, ...], now: dt.datetime) -> dt.datetime:
    """When the next refresh request of a link may be honoured: at most REQUEST_BURST in
    any REQUEST_WINDOW (``asked``: when earlier requests were acted on, oldest first)."""
    recent = [t for t in asked if t > now - REQUEST_WINDOW]
    if len(recent) < REQUEST_BURST:
        return now
    return recent[-REQUEST_BURST] + REQUEST_WINDOW


def backoff(
    *,
    failures: int,
    seed: str,
    base: float = 2.0,
    cap: float = 300.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): exponential with
    ±20% jitter, capped, and never sooner than the provider's ``Retry-After``."""
    exp = min(cap, base * (2 ** max(0, failures - 1)))
    wait = exp * (0.8 + 0.4 * fraction(f"{seed}/{failures}"))
    if retry_after is not None:
        wait = max(wait, capped_retry_after(retry_after))
    return float(wait)


def capped_retry_after(seconds: float) -> float:
    """A provider's Retry-After in [0, MAX_RETRY_AFTER] (NaN and negatives are 0)."""
    if not seconds > 0:  # NaN fails every comparison
        return 0.0
    return min(seconds, MAX_RETRY_AFTER)


def after(now: dt.datetime, seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=seconds)


def validation_retry(*, failures: int, seed: str, retry_after: float | None, cap: float) -> float:
    """Seconds until a validation that got no verdict (rate-limited, unreachable) is tried
    again: after the provider's reset when it names one, else exponential backoff."""
    if retry_after is not None:
        return capped_retry_after(retry_after) + 1.0
    return backoff(failures=failures, seed=seed, base=VALIDATION_BACKOFF_BASE, cap=cap)


def persist_retry(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` of a token write that failed for a reason
    other than a conflict (the API server unreachable, say): 0.4 s doubling to 10 s."""
    return min(10.0, 0.2 * 2.0 ** min(attempt, 6))


def reread_retry(attempt: int) -> float:
    """Seconds before re-reading a Secret after a conflict whose re-read failed."""
    return min(5.0, 0.2 * attempt)


#: How long a link with revokeOnDelete waits for its provider after deletion before the
#: finalizer goes without a revocation (contract §2: a namespace deletion never hangs).
REVOCATION_DEADLINE = dt.timedelta(minutes=5)
#: A deleted link's provider that is not known (yet) is waited for this long: its watch
#: may lag the link's (a provider created a moment before); after that, no revocation.
REVOCATION_PROVIDER_GRACE = dt.timedelta(seconds=30)


def revocation_retry(*, attempt: int, retry_after: float | None) -> float:
    """Seconds before revocation attempt ``attempt + 1``: 2, 4, 8 ... 30 s, or the
    provider's Retry-After when longer (capped like every Retry-After)."""
    wait = min(30.0, 2.0 * 2 ** max(0, attempt - 1))
    return float(max(wait, capped_retry_after(retry_after))) if retry_after is not None else wait


def watch_retry(failures: int) -> float:
    """Seconds before a watch that failed ``failures`` times in a row starts again:
    1 s doubling to 30 s."""
    return min(30.0, 0.5 * 2.0 ** min(failures, 6))


def listing_retry(attempt: int, *, retry_after: float | None) -> float:
    """Seconds before listing the providers again at start-up (the API server may still be
    initialising its storage after a CRD install): the server's Retry-After, else 0.5 s
    more each attempt, at most 10 s."""
    return min(10.0, retry_after or 0.5 * attempt)
