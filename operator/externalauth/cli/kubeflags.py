"""The Kubernetes flags every workspace command takes, before or after the command
(``--kubeconfig``, ``--context``, ``-n``, ``--request-timeout``, ``--as``, ``--as-group``),
gathered into one settings object for the API-server client. Pure.

``--request-timeout`` reads as kubectl reads it: a whole number of seconds (``30``) or a
duration with a unit (``30s``, ``1m``, ``1h30m``); ``0`` means no timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

from externalauth.errors import InvalidInputError

#: Seconds one API request may take when ``--request-timeout`` is not given.
DEFAULT_REQUEST_TIMEOUT = 15.0

_WHOLE_SECONDS = re.compile(r"^\d{1,9}$", re.ASCII)
_KUBECTL_HINT = "a whole number of seconds, or a number with a unit (e.g. 1s, 2m, 3h); 0 means no timeout"


def parse_request_timeout(text: str) -> float:
    """Seconds, from kubectl's ``--request-timeout`` syntax (0: no timeout)."""
    from externalauth.model.durations import parse_duration

    text = text.strip()
    if _WHOLE_SECONDS.match(text):
        return float(int(text))
    try:
        return parse_duration(text).total_seconds()
    except InvalidInputError:
        raise InvalidInputError(f"invalid --request-timeout {text[:40]!r}: {_KUBECTL_HINT}") from None


@dataclasses.dataclass(frozen=True)
class KubeFlags:
    """Where and as whom a command talks to the API server."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    #: Seconds per request; None: not given (:data:`DEFAULT_REQUEST_TIMEOUT`); 0: no timeout.
    request_timeout: float | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()

    def timeout(self, default: float = DEFAULT_REQUEST_TIMEOUT) -> float | None:
        """Seconds one request may take; None for no limit (``--request-timeout 0``)."""
        if self.request_timeout is None:
            return default
        return self.request_timeout or None


def from_args(args: argparse.Namespace) -> KubeFlags:
    """The flags as parsed (given before the command, after it, or both: after wins, and
    ``--as-group`` collects from both places)."""
    groups = [*(getattr(args, "as_groups", None) or []), *(getattr(args, "as_groups_after", None) or [])]
    return KubeFlags(
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
        namespace=getattr(args, "namespace", None),
        request_timeout=getattr(args, "request_timeout", None),
        as_user=getattr(args, "as_user", None),
        as_groups=tuple(groups),
    )
