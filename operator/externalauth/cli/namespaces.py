"""Which cluster and namespace a command works in. :func:`choose` is pure;
:func:`read_pod_namespace` is the one file read; :func:`connect` opens the one API client
(:class:`~externalauth.kube.api.Kube`) from the command's global Kubernetes flags.

In order: ``-n``; the namespace of the kubeconfig context in use; inside a pod, the
pod's own namespace (``/var/run/secrets/kubernetes.io/serviceaccount/namespace``, the
namespace a workspace image signs in from); else ``default``, as kubectl does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from externalauth.cli import exits
from externalauth.cli.kubeflags import DEFAULT_REQUEST_TIMEOUT, KubeFlags

if TYPE_CHECKING:
    from externalauth.kube.api import Kube

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


def of_command(kube: Kube, explicit: str | None) -> str:
    """The namespace a command works in (:func:`choose` over the client's kubeconfig context)."""
    return choose(explicit=explicit, context=kube.context_namespace, pod=read_pod_namespace())


def connect(flags: KubeFlags, *, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Kube:
    """The one API client (:class:`~externalauth.kube.api.Kube`) as a command's Kubernetes
    flags say: kubeconfig and context, ``--as``/``--as-group`` (impersonation), and
    ``--request-timeout`` (else ``timeout``; 0: no limit)."""
    from externalauth.kube.api import Kube

    if flags.as_groups and not flags.as_user:
        raise exits.CommandError("--as-group needs --as (a user to act as)", code=exits.ExitCode.USAGE)
    return Kube.connect(kubeconfig=flags.kubeconfig, context=flags.context, impersonate=flags.as_user,
                        impersonate_groups=flags.as_groups, timeout=flags.timeout(timeout))
