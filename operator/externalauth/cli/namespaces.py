"""Which namespace a command works in when ``-n`` is not given. :func:`choose` is pure;
:func:`read_pod_namespace` is the one file read.

In order: ``-n``; the namespace of the kubeconfig context in use; inside a pod, the
pod's own namespace (``/var/run/secrets/kubernetes.io/serviceaccount/namespace``, the
namespace a workspace image signs in from); else ``default``, as kubectl does.
"""

from __future__ import annotations

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
FALLBACK = "default"


def choose(*, explicit: str | None, context: str | None, pod: str | None) -> str:
    """The namespace to use. ``context`` is the kubeconfig context's ``namespace`` field
    (None when the context has none, or there is no kubeconfig); ``pod`` the content of
    the service-account namespace file (None outside a pod)."""
    for candidate in (explicit, context, pod):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return FALLBACK


def read_pod_namespace(path: str = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    """The pod's namespace, or None outside a pod."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(256).strip() or None
    except OSError:
        return None
