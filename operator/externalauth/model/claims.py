"""The cross-replica claim on a token Secret (contract §5). Pure: ``now`` is passed in.

The annotation ``externalauth.io/refresh-claim`` holds ``<holder>;<unix-seconds-until>``.
It is written with a ``resourceVersion`` precondition before the provider is called and
removed in the same write as the new tokens. Anyone who can edit the Secret can write
it too, so a value is believed only when it could have been written by an operator: a
finite end no further ahead than the longest lease granted (plus clock skew).

A replica whose refresh token the provider refused drops its claim in a write that also
sets ``externalauth.io/dead-grant`` (a salted digest of that token): a claim is a
compare-and-swap on the Secret, so no replica can claim it again for that token without
having seen the verdict.
"""

from __future__ import annotations

import dataclasses
import math
import re

from externalauth.model.secure import SecretStr

#: Seconds of clock skew between replicas tolerated on a claim's end.
SKEW_ALLOWANCE = 30.0
_HOLDER = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclasses.dataclass(frozen=True)
class Claim:
    holder: str
    until: float  # Unix seconds

    def left(self, now: float) -> float:
        """Seconds of lease left at ``now`` (negative once it ran out)."""
        return self.until - now

    def render(self) -> str:
        return f"{self.holder};{self.until:.0f}"


def parse(value: str | None, *, now: float, max_lease: float) -> Claim | None:
    """The claim an annotation value describes, or None when it is absent or cannot be a
    claim: garbage, a holder name with odd characters, a non-finite end, or an end further
    ahead than ``max_lease`` (plus skew) — such a value is forged or corrupt and is replaced."""
    if not value:
        return None
    holder, sep, until_text = value.rpartition(";")
    if not sep or not _HOLDER.match(holder):
        return None
    try:
        until = float(until_text)
    except ValueError:
        return None
    if not math.isfinite(until) or until - now > max_lease + SKEW_ALLOWANCE:
        return None
    return Claim(holder=holder, until=until)


def held_elsewhere(claim: Claim | None, *, holder: str, now: float) -> bool:
    """Does someone else hold a live claim?"""
    return claim is not None and claim.holder != holder and claim.until > now


def lease_left(claim: Claim | None, *, holder: str, now: float) -> float:
    """Seconds left on ``holder``'s own claim (0 when the claim is not ours)."""
    if claim is None or claim.holder != holder:
        return 0.0
    return max(0.0, claim.left(now))


def dead_grant_digest(refresh_token: SecretStr, *, secret_uid: str) -> str:
    """What ``externalauth.io/dead-grant`` holds for a refresh token the provider refused:
    a digest salted with the Secret's uid (it names the token without revealing it)."""
    return refresh_token.digest(f"dead-grant/{secret_uid}")


def marked_dead(value: str | None, refresh_token: SecretStr | None, *, secret_uid: str) -> bool:
    """Does the annotation value ``value`` say that this very refresh token is dead?"""
    return value is not None and refresh_token is not None \
        and value == dead_grant_digest(refresh_token, secret_uid=secret_uid)
