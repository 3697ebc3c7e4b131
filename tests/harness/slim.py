"""Run the ``externalauth`` command as the base install has it: without the ``operator`` extra.

:func:`command` is the argv of a Python process in which every module of a distribution
outside the base dependency closure (read from the installed package's metadata: kopf,
prometheus-client, oauthlib, the test tools...) fails to import, as it would where
only ``pip install externalauth-operator`` ran. I/O: reads installed metadata.
"""

from __future__ import annotations

import functools
import re
import sys
from importlib import metadata

DIST = "externalauth-operator"
BOOT = """
import importlib.abc, sys
BLOCKED = frozenset(sys.argv.pop(1).split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the base install)", name=name)
        return None
sys.meta_path.insert(0, Block())
from externalauth.cli.main import main
sys.exit(main())
"""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: str) -> list[str]:
    """Names a distribution requires without any extra (markers otherwise ignored: wider is safe)."""
    names = []
    for req in metadata.requires(dist) or []:
        if re.search(r"\bextra\s*==", req):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            names.append(_normal(match.group(1)))
    return names


@functools.cache
def base_closure() -> frozenset[str]:
    """The normalized names of the base install: the package and what it requires, recursively."""
    seen: set[str] = set()
    todo = [_normal(DIST)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(_requirements(name))
        except metadata.PackageNotFoundError:
            continue  # a marker-only requirement for another platform
    return frozenset(seen)


@functools.cache
def blocked_modules() -> frozenset[str]:
    """Top-level modules of every installed distribution outside the base closure."""
    closure = base_closure()
    return frozenset(top for top, dists in metadata.packages_distributions().items()
                     if not any(_normal(d) in closure for d in dists) and top.isidentifier())


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", BOOT, ",".join(sorted(blocked_modules())), *args]
