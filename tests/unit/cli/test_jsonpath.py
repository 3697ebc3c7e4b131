"""``status -o jsonpath=...``: kubectl's templates on ExternalAuthLink objects. Pure table."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.cli import jsonpath

LINK_A = {"metadata": {"name": "a", "namespace": "alice", "labels": {"externalauth.io/tier": "gold"}},
          "spec": {"providerName": "github"},
          "status": {"account": "octo", "conditions": [{"type": "Ready", "status": "True"},
                                                        {"type": "Refreshable", "status": "False"}]}}
LINK_B = {"metadata": {"name": "b", "namespace": "alice"}, "spec": {"providerName": "gitlab", "port": 3},
          "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
LIST = {"apiVersion": "v1", "kind": "List", "items": [LINK_A, LINK_B]}


@pytest.mark.parametrize(("template", "root", "expected"), [
    pytest.param("{.metadata.name}", LINK_A, "a", id="a field of one object"),
    pytest.param("{.items[*].metadata.name}", LIST, "a b", id="a field of every item, joined by a space"),
    pytest.param("{.items[0].spec.providerName}", LIST, "github", id="an item by index"),
    pytest.param("{.items[-1].metadata.name}", LIST, "b", id="an item from the end"),
    pytest.param("{.items[0:1].metadata.name}", LIST, "a", id="a slice"),
    pytest.param("{range .items[*]}{.metadata.name}{\"\\t\"}{.spec.providerName}{\"\\n\"}{end}", LIST,
                 "a\tgithub\nb\tgitlab\n", id="range with tab and newline literals"),
    pytest.param('{.status.conditions[?(@.type=="Ready")].status}', LINK_A, "True", id="a filter on a string"),
    pytest.param('{.items[?(@.spec.port>2)].metadata.name}', LIST, "b", id="a filter on a number"),
    pytest.param('{.items[?(@.status.account)].metadata.name}', LIST, "a", id="a filter on a key being there"),
    pytest.param("{..providerName}", LIST, "github gitlab", id="a key at any depth"),
    pytest.param("{.metadata.labels.externalauth\\.io/tier}", LINK_A, "gold", id="an escaped dot in a key"),
    pytest.param("{.items[*]['metadata']['name']}", LIST, "a b", id="quoted keys in brackets"),
    pytest.param("{.status.conditions[0]}", LINK_A, '{"type":"Ready","status":"True"}', id="a map prints as JSON"),
    pytest.param("{.spec.port}", LINK_B, "3", id="a number prints as JSON"),
    pytest.param("{.status.missing}", LINK_A, "", id="a missing key gives nothing"),
    pytest.param("name: {.metadata.name}!", LINK_A, "name: a!", id="text around an action is kept"),
    pytest.param("{$.metadata.name}", LINK_A, "a", id="a leading $ is the object"),
])
def test_a_template(template: str, root: Any, expected: str) -> None:
    assert expected == jsonpath.render(template, root)


@pytest.mark.parametrize(("template", "message"), [
    pytest.param("{.metadata.name", "unclosed '{'", id="an unclosed brace"),
    pytest.param("{range .items[*]}{.metadata.name}", "{range} without {end}", id="range without end"),
    pytest.param("{end}", "{end} without {range}", id="end without range"),
    pytest.param("{.items[x]}", "not an index", id="an index that is not a number"),
    pytest.param("{.items[?(@.a==b)]}", "not a quoted string or a number", id="a filter value unquoted"),
    pytest.param("{.items[0}", "unclosed '['", id="an unclosed bracket"),
])
def test_a_malformed_template_is_one_clear_error(template: str, message: str) -> None:
    with pytest.raises(jsonpath.TemplateError, match=message.replace("{", r"\{").replace("[", r"\[")):
        jsonpath.render(template, LIST)
