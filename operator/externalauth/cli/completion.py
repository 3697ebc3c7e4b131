"""``externalauth completion SHELL`` and the hidden ``externalauth __complete WORD...``
(also ``kubectl_complete-externalauth``): print a script, or the candidates for one TAB.
I/O: stdout, and the cluster for names of providers, links and namespaces (imported only
then, so that a TAB on a command or a flag stays as quick as ``--version``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from externalauth.cli import completing, kubeflags
from externalauth.errors import ExternalAuthError

#: Seconds a TAB may wait for the API server before it offers nothing.
CLUSTER_TIMEOUT = 3.0


def completion_command(args: argparse.Namespace) -> int:
    sys.stdout.write(completing.script(args.shell))
    sys.stdout.flush()
    return 0


def flag_value(words: Sequence[str], *names: str) -> str | None:
    """The value of the last of ``names`` in ``words`` (``--flag V`` or ``--flag=V``). Pure."""
    found = None
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                found = words[i + 1]
            elif word.startswith(name + "="):
                found = word.split("=", 1)[1]
    return found


def cluster_names(need: completing.Need, words: Sequence[str]) -> list[str]:
    """Names from the cluster for a completion; none when it cannot be asked quickly."""
    from externalauth.cli import namespaces

    try:
        groups = tuple(g for i, g in enumerate(words[1:]) if words[i] == "--as-group")
        flags = kubeflags.KubeFlags(kubeconfig=flag_value(words, "--kubeconfig"),
                                    context=flag_value(words, "--context"),
                                    as_user=flag_value(words, "--as"), as_groups=groups)
        cluster = namespaces.connect(flags, timeout=CLUSTER_TIMEOUT)
        if need is completing.Need.PROVIDER:
            return cluster.list_names("externalauthproviders")
        if need is completing.Need.NAMESPACE:
            return cluster.list_names("namespaces")
        links, _ = cluster.list_links(namespaces.of_command(cluster, flag_value(words, "-n", "--namespace")))
        return sorted(str((link.get("metadata") or {}).get("name") or "") for link in links)
    except (ExternalAuthError, OSError, ValueError):
        return []


def complete_command(parser: argparse.ArgumentParser, words: Sequence[str]) -> int:
    """``__complete WORD... CURRENT``: the candidates for CURRENT, one per line, then the
    directive (see :mod:`externalauth.cli.completing`)."""
    *before, current = list(words) or [""]
    answer = completing.complete(completing.tree(parser), before, current)
    found: list[str] = []
    if answer.need in (completing.Need.PROVIDER, completing.Need.LINK, completing.Need.NAMESPACE):
        found = cluster_names(answer.need, before)
    sys.stdout.write(completing.render(answer, found))
    sys.stdout.flush()
    return 0
