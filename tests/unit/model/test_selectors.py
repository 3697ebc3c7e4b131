"""spec.namespaceSelector: Kubernetes label-selector semantics, and bad selectors refused
with the field named (contract §1)."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.errors import InvalidInputError
from externalauth.model.selectors import parse_selector
from externalauth.model.specs import parse_provider

TEAM_A = {"team": "a", "env": "prod"}
TEAM_B = {"team": "b"}
NO_LABELS: dict[str, str] = {}


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    pytest.param({}, NO_LABELS, True, id="an empty selector matches every namespace"),
    pytest.param({"matchLabels": {"team": "a"}}, TEAM_A, True, id="matchLabels holds"),
    pytest.param({"matchLabels": {"team": "a"}}, TEAM_B, False, id="matchLabels with another value fails"),
    pytest.param({"matchLabels": {"team": "a"}}, NO_LABELS, False, id="matchLabels without the key fails"),
    pytest.param({"matchLabels": {"team": "a", "env": "dev"}}, TEAM_A, False,
                 id="every matchLabels pair must hold"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "c"]}]}, TEAM_A, True,
                 id="In holds for one of its values"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "In", "values": ["c"]}]}, TEAM_A, False,
                 id="In fails for another value"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, NO_LABELS, False,
                 id="In fails without the key"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, TEAM_A, False,
                 id="NotIn fails for a listed value"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, TEAM_B, True,
                 id="NotIn holds for another value"),
    pytest.param({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, NO_LABELS, True,
                 id="NotIn holds without the key"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, TEAM_A, True, id="Exists holds"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, TEAM_B, False,
                 id="Exists fails without the key"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, TEAM_B, True,
                 id="DoesNotExist holds without the key"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, TEAM_A, False,
                 id="DoesNotExist fails with the key"),
    pytest.param({"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "env", "operator": "In",
                                                                      "values": ["dev"]}]}, TEAM_A, False,
                 id="matchLabels and matchExpressions must both hold"),
])
def test_selector_matching(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert parse_selector("spec.namespaceSelector", selector).matches(labels) is matches


@pytest.mark.parametrize(("selector", "words"), [
    pytest.param("team=a", "must be a label selector", id="not an object"),
    pytest.param({"matchLabels": {"team": 1}}, "matchLabels must map", id="a matchLabels value not a string"),
    pytest.param({"matchExpressions": {"key": "x"}}, "must be a list", id="matchExpressions not a list"),
    pytest.param({"matchExpressions": [{"operator": "Exists"}]}, "needs a key", id="an expression without a key"),
    pytest.param({"matchExpressions": [{"key": "x", "operator": "Gt", "values": ["1"]}]},
                 "must be In, NotIn, Exists or DoesNotExist", id="an unknown operator"),
    pytest.param({"matchExpressions": [{"key": "x", "operator": "In"}]}, "In needs at least one value",
                 id="In without values"),
    pytest.param({"matchExpressions": [{"key": "x", "operator": "Exists", "values": ["1"]}]},
                 "Exists takes no values", id="Exists with values"),
])
def test_bad_selectors_are_refused_naming_the_field(selector: Any, words: str) -> None:
    with pytest.raises(InvalidInputError, match=r"spec\.namespaceSelector") as e:
        parse_provider("p", {"clientID": "c", "tokenURL": "https://t.example/token", "namespaceSelector": selector})
    assert words in str(e.value)


@pytest.mark.parametrize(("selector", "words"), [
    pytest.param({}, "(everything)", id="empty"),
    pytest.param({"matchLabels": {"team": "a"}}, "team=a", id="matchLabels"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                                       {"key": "legacy", "operator": "DoesNotExist"},
                                       {"key": "team", "operator": "Exists"}]},
                 "env notin (dev,prod),!legacy,team", id="expressions, values sorted"),
])
def test_selectors_are_described_as_kubectl_writes_them(selector: dict[str, Any], words: str) -> None:
    assert parse_selector("s", selector).describe() == words


def test_a_provider_without_a_selector_allows_a_namespace_not_known_yet() -> None:
    spec = parse_provider("p", {"clientID": "c", "tokenURL": "https://t.example/token"})
    assert spec.namespace_selector is None and spec.allows(None)
    selective = parse_provider("p", {"clientID": "c", "tokenURL": "https://t.example/token",
                                     "namespaceSelector": {"matchLabels": {"team": "a"}}})
    assert not selective.allows(None) and selective.allows({"team": "a"})
