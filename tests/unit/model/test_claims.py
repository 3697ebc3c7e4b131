"""The cross-replica claim (model/claims.py) at its edges: when a claim is believed, when
it is someone else's live claim, and how much of our own lease is left."""

from __future__ import annotations

import pytest

from externalauth.model import claims
from externalauth.model.claims import SKEW_ALLOWANCE, Claim
from externalauth.model.secure import SecretStr

NOW = 1_800_000_000.0
LEASE = 60.0

PARSE: list[tuple[str, str | None, Claim | None]] = [
    ("no annotation is no claim", None, None),
    ("a claim ending exactly at the longest lease plus skew is believed",
     f"r1;{NOW + LEASE + SKEW_ALLOWANCE:.0f}", Claim("r1", NOW + LEASE + SKEW_ALLOWANCE)),
    ("a claim ending a second beyond the longest lease plus skew is forged",
     f"r1;{NOW + LEASE + SKEW_ALLOWANCE + 1:.0f}", None),
    ("a holder with a semicolon cannot be written by an operator", f"a;b;{NOW:.0f}", None),
    ("an end that is not a number is garbage", "r1;soon", None),
]


@pytest.mark.parametrize(("value", "expected"), [r[1:] for r in PARSE], ids=[r[0] for r in PARSE])
def test_parse(value: str | None, expected: Claim | None) -> None:
    assert expected == claims.parse(value, now=NOW, max_lease=LEASE)


HELD: list[tuple[str, Claim | None, bool]] = [
    ("another replica's claim ending later is held elsewhere", Claim("other", NOW + 1), True),
    ("another replica's claim ending now has ended", Claim("other", NOW), False),
    ("our own claim is not held elsewhere", Claim("me", NOW + 30), False),
    ("no claim is not held", None, False),
]


@pytest.mark.parametrize(("claim", "expected"), [r[1:] for r in HELD], ids=[r[0] for r in HELD])
def test_held_elsewhere(claim: Claim | None, expected: bool) -> None:
    assert expected == claims.held_elsewhere(claim, holder="me", now=NOW)


LEFT: list[tuple[str, Claim | None, float]] = [
    ("our claim: the seconds left", Claim("me", NOW + 25), 25.0),
    ("our claim that ran out: nothing left", Claim("me", NOW - 5), 0.0),
    ("another replica's claim: none of it is ours", Claim("other", NOW + 25), 0.0),
    ("no claim: nothing left", None, 0.0),
]


@pytest.mark.parametrize(("claim", "expected"), [r[1:] for r in LEFT], ids=[r[0] for r in LEFT])
def test_lease_left(claim: Claim | None, expected: float) -> None:
    assert expected == claims.lease_left(claim, holder="me", now=NOW)


RT = SecretStr("refresh-token-value")
MARK = claims.dead_grant_digest(RT, secret_uid="uid-1")
DEAD: list[tuple[str, str | None, SecretStr | None, str, bool]] = [
    ("the mark of this token on this Secret says dead", MARK, RT, "uid-1", True),
    ("no mark says nothing", None, RT, "uid-1", False),
    ("another token's mark does not", claims.dead_grant_digest(SecretStr("other"), secret_uid="uid-1"), RT,
     "uid-1", False),
    ("a mark salted for another Secret (a recreated one) does not", MARK, RT, "uid-2", False),
    ("a Secret without a refresh token is not marked", MARK, None, "uid-1", False),
]


@pytest.mark.parametrize(("value", "token", "uid", "expected"), [r[1:] for r in DEAD], ids=[r[0] for r in DEAD])
def test_marked_dead(value: str | None, token: SecretStr | None, uid: str, expected: bool) -> None:
    assert expected == claims.marked_dead(value, token, secret_uid=uid)


def test_a_dead_grant_mark_does_not_reveal_the_token() -> None:
    assert "refresh-token-value" not in MARK and 16 == len(MARK)
