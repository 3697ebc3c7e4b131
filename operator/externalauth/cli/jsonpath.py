"""kubectl's ``-o jsonpath=TEMPLATE``, the part of it people use. Pure.

A template is text with ``{...}`` actions, as in ``kubectl get -o jsonpath``:

- a path from the object: ``{.metadata.name}``, ``{.items[*].metadata.name}``, ``{.items[0]}``,
  ``{.items[-1:]}`` (slices), ``{..name}`` (at any depth), ``{.items[*]['metadata']['name']}``,
  ``{.metadata.labels.externalauth\\.io/provider}`` (a dot in a key escaped), ``{.*}``;
- a filter: ``{.status.conditions[?(@.type=="Ready")].status}`` (``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=`` against a quoted string or a number, or ``[?(@.key)]``: the key is there);
- ``{range .items[*]}...{end}``: the text between, once per element;
- string literals: ``{"\\n"}``, ``{"\\t"}``.

Several results of one action are joined by a space; strings print as they are, other values
as JSON. A key that is not there gives nothing (kubectl's ``--allow-missing-template-keys``,
its default). Why not jsonpath-ng: it has neither the braces, nor ``range``, nor kubectl's
printing rules, and it would add a dependency (and its start-up) to every workspace image.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from externalauth.errors import InvalidInputError


class TemplateError(InvalidInputError):
    """The template cannot be parsed."""


# --- paths -----------------------------------------------------------------------------------
Step = Callable[[Any], Iterator[Any]]

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_FILTER = re.compile(r"^\?\(\s*@((?:\.[^\s=!<>]+|\[[^\]]*\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _key(name: str) -> Step:
    def step(node: Any) -> Iterator[Any]:
        if isinstance(node, dict) and name in node:
            yield node[name]
    return step


def _everywhere(name: str) -> Step:
    """``..name``: the key at any depth (``..*``: every value at any depth)."""
    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if name == "*":
                yield from node.values()
            elif name in node:
                yield node[name]
        for child in _children(node):
            yield from walk(child)
    return walk


def _all(node: Any) -> Iterator[Any]:
    yield from _children(node)


def _index(text: str) -> Step:
    parts = text.split(":")
    try:
        numbers = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise TemplateError(f"jsonpath: [{text}] is not an index or a slice") from None
    if len(numbers) == 1:
        i = numbers[0]
        if i is None:
            raise TemplateError("jsonpath: [] needs an index")

        def one(node: Any) -> Iterator[Any]:
            if isinstance(node, list) and -len(node) <= i < len(node):
                yield node[i]
        return one
    if len(numbers) > 3:
        raise TemplateError(f"jsonpath: [{text}] is not a slice")
    start, stop, *rest = numbers
    stride = rest[0] if rest else None
    if stride == 0:
        raise TemplateError("jsonpath: a slice's step cannot be 0")

    def sliced(node: Any) -> Iterator[Any]:
        if isinstance(node, list):
            yield from node[start:stop:stride]
    return sliced


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _NUMBER.match(text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    raise TemplateError(f"jsonpath: {text!r} is not a quoted string or a number")


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(right, float) and isinstance(left, int | float) and not isinstance(left, bool):
        left = float(left)
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if type(left) is not type(right) or not isinstance(left, str | float):
        return False
    return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])


def _filter(text: str) -> Step:
    match = _FILTER.match(text)
    if match is None:
        raise TemplateError(f"jsonpath: [{text}] is not a filter like [?(@.type==\"Ready\")]")
    path, op, value = match.groups()
    steps = parse_path(path or "")
    wanted = _literal(value) if op else None

    def keep(node: Any) -> Iterator[Any]:
        for item in node if isinstance(node, list) else []:
            found = evaluate(steps, item)
            if op is None and found:
                yield item
            elif op is not None and any(_compare(f, op, wanted) for f in found):
                yield item
    return keep


def _bracket(text: str) -> Step:
    text = text.strip()
    if text == "*":
        return _all
    if text.startswith("?"):
        return _filter(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return _key(text[1:-1])
    return _index(text)


def parse_path(text: str) -> list[Step]:
    """The steps of a path like ``.items[*].metadata.name`` (a leading ``$`` or ``@`` is the object)."""
    steps: list[Step] = []
    i, n = 0, len(text)
    if text[:1] in ("$", "@"):
        i = 1
    while i < n:
        ch = text[i]
        if text.startswith("..", i):
            name, i = _name(text, i + 2)
            if not name:
                raise TemplateError(f"jsonpath: '..' needs a key after it in {text!r}")
            steps.append(_everywhere(name))
        elif ch == ".":
            name, i = _name(text, i + 1)
            if name == "*":
                steps.append(_all)
            elif name:
                steps.append(_key(name))
        elif ch == "[":
            end = _closing(text, i)
            steps.append(_bracket(text[i + 1:end]))
            i = end + 1
        else:
            raise TemplateError(f"jsonpath: unexpected {ch!r} in {text!r}")
    return steps


def _name(text: str, i: int) -> tuple[str, int]:
    """A key after a dot, up to the next unescaped ``.`` or ``[`` (``\\.`` is a dot in the key)."""
    out = []
    while i < len(text) and text[i] not in ".[":
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i


def _closing(text: str, i: int) -> int:
    depth, quote = 0, ""
    for j in range(i, len(text)):
        ch = text[j]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth == 0:
                return j
    raise TemplateError(f"jsonpath: unclosed '[' in {text!r}")


def evaluate(steps: Sequence[Step], root: Any) -> list[Any]:
    nodes = [root]
    for step in steps:
        nodes = [found for node in nodes for found in step(node)]
    return nodes


# --- templates -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Text:
    text: str


@dataclasses.dataclass(frozen=True)
class _Path:
    steps: tuple[Step, ...]


@dataclasses.dataclass(frozen=True)
class _Range:
    steps: tuple[Step, ...]
    body: tuple[_Text | _Path | _Range, ...]


Node = _Text | _Path | _Range
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}


def _string(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _actions(template: str) -> Iterator[tuple[bool, str]]:
    """(is an action, text) pieces of a template; ``{`` inside quotes does not end an action."""
    i, n = 0, len(template)
    while i < n:
        start = template.find("{", i)
        if start < 0:
            yield False, template[i:]
            return
        if start > i:
            yield False, template[i:start]
        j, quote = start + 1, ""
        while j < n and (quote or template[j] != "}"):
            if quote and template[j] == "\\":
                j += 1
            elif template[j] in "'\"":
                quote = "" if quote == template[j] else (quote or template[j])
            j += 1
        if j >= n:
            raise TemplateError(f"jsonpath: unclosed '{{' in {template!r}")
        yield True, template[start + 1:j].strip()
        i = j + 1


def parse(template: str) -> tuple[Node, ...]:
    """The template as a tree of text, paths and ranges; :class:`TemplateError` if it is malformed."""
    stack: list[tuple[tuple[Step, ...] | None, list[Node]]] = [(None, [])]
    for is_action, text in _actions(template):
        body = stack[-1][1]
        if not is_action:
            body.append(_Text(text))
        elif len(text) >= 2 and text[0] == text[-1] == '"':
            body.append(_Text(_string(text[1:-1])))
        elif text.startswith("range ") or text == "range":
            stack.append((tuple(parse_path(text[5:].strip())), []))
        elif text == "end":
            if len(stack) == 1:
                raise TemplateError("jsonpath: {end} without {range}")
            steps, inner = stack.pop()
            assert steps is not None
            stack[-1][1].append(_Range(steps, tuple(inner)))
        elif text == "":
            raise TemplateError("jsonpath: an empty {}")
        else:
            body.append(_Path(tuple(parse_path(text))))
    if len(stack) != 1:
        raise TemplateError("jsonpath: {range} without {end}")
    return tuple(stack[0][1])


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _render(nodes: Sequence[Node], root: Any, out: list[str], escape: Callable[[str], str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Path):
            out.append(" ".join(escape(_text(v)) for v in evaluate(node.steps, root)))
        else:
            for item in evaluate(node.steps, root):
                _render(node.body, item, out, escape)


def render(template: str, root: Any, *, escape: Callable[[str], str] = str) -> str:
    """``template`` applied to ``root`` (a dict from the API server, or a List of them).
    ``escape`` is applied to every value found (not to the template's own text)."""
    out: list[str] = []
    _render(parse(template), root, out, escape)
    return "".join(out)
