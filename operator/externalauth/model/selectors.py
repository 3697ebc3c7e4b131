"""Label selectors (metav1.LabelSelector): which namespaces may use a provider
(``spec.namespaceSelector``, contract §1). Pure.

Semantics as Kubernetes defines them: every ``matchLabels`` pair and every
``matchExpressions`` requirement must hold (AND); an empty selector matches every
namespace; ``In`` and ``NotIn`` need at least one value, ``Exists`` and
``DoesNotExist`` none; ``NotIn`` and ``DoesNotExist`` hold for a namespace without the key.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from externalauth.errors import InvalidInputError


class Operator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is Operator.IN:
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.holds(labels) for r in self.requirements)

    def describe(self) -> str:
        """The selector in kubectl's words (``team=a,env in (dev,prod),!legacy``)."""
        parts = []
        for r in self.requirements:
            if r.operator is Operator.EXISTS:
                parts.append(r.key)
            elif r.operator is Operator.DOES_NOT_EXIST:
                parts.append(f"!{r.key}")
            elif r.operator is Operator.IN and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            else:
                word = "in" if r.operator is Operator.IN else "notin"
                parts.append(f"{r.key} {word} ({','.join(sorted(r.values))})")
        return ",".join(parts) or "(everything)"


def parse_selector(field: str, raw: Any) -> LabelSelector:
    """A LabelSelector from its API form; :class:`InvalidInputError` naming ``field``."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{field} must be a label selector (matchLabels, matchExpressions)")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in match_labels.items()):
        raise InvalidInputError(f"{field}.matchLabels must map label names to strings")
    for key, value in sorted(match_labels.items()):
        requirements.append(Requirement(key, Operator.IN, frozenset({value})))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise InvalidInputError(f"{field}.matchExpressions must be a list")
    for i, expr in enumerate(expressions):
        where = f"{field}.matchExpressions[{i}]"
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str) or not expr["key"]:
            raise InvalidInputError(f"{where} needs a key")
        try:
            op = Operator(str(expr.get("operator")))
        except ValueError:
            raise InvalidInputError(f"{where}.operator must be In, NotIn, Exists or DoesNotExist") from None
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidInputError(f"{where}.values must be a list of strings")
        if op in (Operator.IN, Operator.NOT_IN) and not values:
            raise InvalidInputError(f"{where}: {op} needs at least one value")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise InvalidInputError(f"{where}: {op} takes no values")
        requirements.append(Requirement(expr["key"], op, frozenset(values)))
    return LabelSelector(tuple(requirements))
