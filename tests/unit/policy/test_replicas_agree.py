"""The status a replica writes is a fixed point for another replica that reads it: the one
that refreshed a token decides from its memory, the other from the status alone, and the
other finds nothing to change (else each write wakes the other's watch, and the two write
back and forth until the next refresh)."""

from __future__ import annotations

import datetime as dt

import pytest

from externalauth.policy.deciding import LinkMemory, decide, render_status
from tests.unit.policy.test_policy import NOW, inp, tokens, validated


@pytest.mark.parametrize("refreshed_at", [
    pytest.param(NOW, id="a refresh on a whole second"),
    pytest.param(NOW + dt.timedelta(microseconds=900_000), id="a refresh 0.9 s past a whole second"),
    pytest.param(NOW + dt.timedelta(microseconds=1), id="a refresh 1 µs past a whole second"),
])
def test_the_status_of_the_replica_that_refreshed_is_a_fixed_point_for_the_other(refreshed_at: dt.datetime) -> None:
    """200 links (their jitter seeds differ): the refresher's issued time is in its memory
    to the microsecond, the status has it to the second; both plan the same nextRefreshTime."""
    for n in range(200):
        t = tokens(access=f"a{n}")
        refresher = LinkMemory(last_refresh=refreshed_at, last_refresh_fingerprint=t.access_token.fingerprint(),
                               validation=validated(f"a{n}"))
        written = render_status(decide(inp(tokens=t, memory=refresher, uid=f"uid-{n}")), existing={}, now=NOW,
                                generation=1)
        other = decide(inp(tokens=t, status=written, memory=LinkMemory(), uid=f"uid-{n}"))
        assert written == render_status(other, existing=written, now=NOW, generation=1), f"link {n}"


_OLD, _NEW = tokens(access="old"), tokens(access="new")
_NEW_FP, _OLD_FP = _NEW.access_token.fingerprint(), _OLD.access_token.fingerprint()
_SEEN_NOW = (_NEW_FP, NOW, True)


@pytest.mark.parametrize(("memory", "status", "hold"), [
    pytest.param(LinkMemory(claim_seen=_OLD_FP, seen=_SEEN_NOW), {}, True,
                 id="a token that replaced one another replica was refreshing waits for that replica's status"),
    pytest.param(LinkMemory(seen=_SEEN_NOW), {}, False,
                 id="a token that replaced one nobody else claimed (a user's write) is reported at once"),
    pytest.param(LinkMemory(claim_seen=_OLD_FP, seen=(_NEW_FP, NOW - dt.timedelta(seconds=30), True)), {}, False,
                 id="after the grace the replica writes its own status"),
    pytest.param(LinkMemory(claim_seen=_NEW_FP, seen=(_NEW_FP, NOW, False)), {}, False,
                 id="the token the claim was seen on is reported as usual"),
    pytest.param(LinkMemory(claim_seen=_OLD_FP, seen=_SEEN_NOW), {"validatedTokenDigest": "d-new"}, False,
                 id="once the status vouches for the token there is nothing to wait for"),
])
def test_who_waits_for_another_replicas_status(memory: LinkMemory, status: dict[str, str], hold: bool) -> None:
    plan = decide(inp(tokens=_NEW, memory=memory, status=status, token_digest="d-new"))
    assert hold == plan.hold_status
