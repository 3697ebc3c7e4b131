"""The conditions the decision carries over rather than decides (policy/deciding.py): the
Validated condition from memory or from the status (after a restart, or when another
replica validated this very token), and the Refreshable condition kept while an action
runs. Each row asserts the whole condition: type, status, reason, message."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.model.reasons import ValidatedReason
from externalauth.model.secure import SecretStr
from externalauth.policy import deciding
from externalauth.policy.deciding import LinkMemory
from tests.unit.policy.test_policy import inp, validated

FP = SecretStr("a1").fingerprint()  # the access token of test_policy's default Secret
VALID_IN_STATUS = {"conditions": [{"type": "Validated", "status": "True", "reason": "Valid", "message": "ok"}]}

Row = tuple[str, Any, bool, tuple[str, str, str, str]]
VALIDATED: list[Row] = [
    ("validation off: Disabled", inp(), False,
     ("Validated", "Unknown", "Disabled", "validation is disabled for this link or provider")),
    ("a verdict on this token in memory: Valid", inp(), True, ("Validated", "True", "Valid", "m")),
    ("an Invalid verdict in memory: False",
     inp(memory=LinkMemory(validation=validated(reason=ValidatedReason.INVALID))), True,
     ("Validated", "False", "Invalid", "m")),
    ("a verdict without an answer in memory: Unknown",
     inp(memory=LinkMemory(validation=validated(reason=ValidatedReason.RATE_LIMITED))), True,
     ("Validated", "Unknown", "RateLimited", "m")),
    ("restarted (no memory): the status' condition is carried over",
     inp(memory=LinkMemory(), status=VALID_IN_STATUS), True, ("Validated", "True", "Valid", "ok")),
    ("restarted, a status condition missing its fields: Unknown, Pending, no message",
     inp(memory=LinkMemory(), status={"conditions": [{"type": "Validated"}]}), True,
     ("Validated", "Unknown", "Pending", "")),
    ("restarted, validation was disabled before: Pending now",
     inp(memory=LinkMemory(), status={"conditions": [
         {"type": "Validated", "status": "Unknown", "reason": "Disabled", "message": "x"}]}), True,
     ("Validated", "Unknown", "Pending", "the token has not been validated yet")),
    ("a verdict on an older token, the status vouching for this one (another replica): carried over",
     inp(memory=LinkMemory(validation=validated(access="old")), token_digest="d",
         status={**VALID_IN_STATUS, "validatedTokenDigest": "d"}), True, ("Validated", "True", "Valid", "ok")),
    ("a verdict on an older token, the status vouching for another: Pending",
     inp(memory=LinkMemory(validation=validated(access="old")), token_digest="d",
         status={**VALID_IN_STATUS, "validatedTokenDigest": "other"}), True,
     ("Validated", "Unknown", "Pending", "the token has not been validated yet")),
]


@pytest.mark.parametrize(("case", "validating", "expected"), [r[1:] for r in VALIDATED], ids=[r[0] for r in VALIDATED])
def test_validated_condition(case: Any, validating: bool, expected: tuple[str, str, str, str]) -> None:
    c = deciding._validated_condition(case, FP, validating)
    assert expected == (c.type, str(c.status), str(c.reason), c.message)


UNCHANGED: list[tuple[str, Any, tuple[str, str, str, str]]] = [
    ("no condition yet: NotYetDue", None,
     ("Refreshable", "True", "NotYetDue", "the token is refreshed ahead of its expiry")),
    ("a condition is kept as it is", {"type": "Refreshable", "status": "False", "reason": "X", "message": "m"},
     ("Refreshable", "False", "X", "m")),
    ("a condition missing its fields: Unknown, NotYetDue, no message", {"type": "Refreshable"},
     ("Refreshable", "Unknown", "NotYetDue", "")),
]


@pytest.mark.parametrize(("existing", "expected"), [r[1:] for r in UNCHANGED], ids=[r[0] for r in UNCHANGED])
def test_refreshable_kept_while_acting(existing: Any, expected: tuple[str, str, str, str]) -> None:
    c = deciding._unchanged(existing)
    assert expected == (c.type, str(c.status), str(c.reason), c.message)
