"""The events each refresh outcome says (policy/effects.py), whole: type, reason and the
deterministic message a user reads in `kubectl describe`. One row per sentence."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from externalauth.policy import effects
from externalauth.policy.deciding import LinkMemory
from externalauth.policy.effects import Refresh, RefreshOutcome
from tests.unit.policy.test_effects import NEW, NOW, RT_SOON, SENT, ctx

Rows = list[tuple[str, Refresh, Any, list[tuple[str, str, str]]]]
ROWS: Rows = [
    ("persisted: Normal Refreshed, with the new expiry", Refresh(RefreshOutcome.PERSISTED, tokens=NEW, stored=True),
     ctx(), [("Normal", "Refreshed", "refreshed the access token; it expires at 2026-11-27T13:00:00Z")]),
    ("persisted without an expiry: no expiry said",
     Refresh(RefreshOutcome.PERSISTED, tokens=dataclasses.replace(NEW, expiry=None), stored=True), ctx(),
     [("Normal", "Refreshed", "refreshed the access token")]),
    ("persisted with a refresh token expiring in exactly a week: warned",
     Refresh(RefreshOutcome.PERSISTED, tokens=dataclasses.replace(RT_SOON, refresh_token_expiry=NOW + dt.timedelta(
         days=7)), stored=True), ctx(),
     [("Normal", "Refreshed", "refreshed the access token; it expires at 2026-11-27T13:00:00Z"),
      ("Warning", "RefreshTokenExpiringSoon",
       "the refresh token expires at 2026-12-04T12:00:00Z: sign in again before then")]),
    ("superseded: Normal RefreshSuperseded", Refresh(RefreshOutcome.SUPERSEDED, stored=True), ctx(),
     [("Normal", "RefreshSuperseded", "another writer refreshed the token first; its token was kept")]),
    ("a dead grant: Warning ReauthRequired with the provider's words",
     Refresh(RefreshOutcome.DEAD_GRANT, message="the provider refused the refresh token (invalid_grant)"), ctx(),
     [("Warning", "ReauthRequired", "the provider refused the refresh token (invalid_grant): sign in again to "
       "write a new token into the Secret")]),
    ("a dead grant after an unanswered exchange: TokenLost first",
     Refresh(RefreshOutcome.DEAD_GRANT, message="refused (invalid_grant)"), ctx(memory=LinkMemory(unanswered=SENT)),
     [("Warning", "TokenLost", "the provider's answer to a refresh was lost in flight and the grant is gone (the "
       "provider had already rotated the token)"),
      ("Warning", "ReauthRequired", "refused (invalid_grant): sign in again to write a new token into the Secret")]),
    ("a permanent failure: Warning RefreshFailed, not retried",
     Refresh(RefreshOutcome.PERMANENT, message="unusable answer"), ctx(),
     [("Warning", "RefreshFailed", "unusable answer; not retried: sign in again")]),
    ("a transient failure: Warning RefreshFailed, retried",
     Refresh(RefreshOutcome.TRANSIENT, message="HTTP 503"), ctx(),
     [("Warning", "RefreshFailed", "HTTP 503; retrying with backoff")]),
    ("a token lost: Warning TokenLost with why",
     Refresh(RefreshOutcome.LOST, message="the Secret was deleted during the refresh", lost_reason="gone"), ctx(),
     [("Warning", "TokenLost", "a token obtained from the provider could not be stored: the Secret was deleted "
       "during the refresh")]),
]


@pytest.mark.parametrize(("refresh", "context", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_refresh_events(refresh: Refresh, context: Any, expected: list[tuple[str, str, str]]) -> None:
    assert expected == [(e.type, str(e.reason), e.message) for e in effects.refresh_effects(refresh, context).events]


def test_a_loss_without_a_known_reason_is_counted_as_unknown() -> None:
    assert "unknown" == effects.refresh_effects(Refresh(RefreshOutcome.LOST, message="m"), ctx()).lost


def test_a_failure_is_remembered_with_its_message_and_backoff_seed() -> None:
    first = effects.refresh_effects(Refresh(RefreshOutcome.TRANSIENT, message="HTTP 503"), ctx(seed="ns/a"))
    other = effects.refresh_effects(Refresh(RefreshOutcome.TRANSIENT, message="HTTP 503"), ctx(seed="ns/b"))
    assert first.memory.failure is not None and other.memory.failure is not None
    assert "HTTP 503" == first.memory.failure.message
    assert first.memory.failure.retry_at != other.memory.failure.retry_at  # jitter seeded per link
