"""Building the API client from a kubeconfig, the in-cluster service account or the env."""

from __future__ import annotations

import os

import pykube
from pykube.http import KubernetesHTTPAdapter

from externalauth.errors import PermanentError


def connect(*, kubeconfig: str | None = None, context: str | None = None,
            pool_size: int = 64, timeout: float = 30.0) -> pykube.HTTPClient:
    """An HTTP client for the API server, with a connection pool sized for the engine."""
    try:
        if kubeconfig or os.environ.get("KUBECONFIG"):
            path = kubeconfig or os.environ["KUBECONFIG"].split(os.pathsep)[0]
            config = pykube.KubeConfig.from_file(path)
        elif os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
            config = pykube.KubeConfig.from_service_account()
        else:
            config = pykube.KubeConfig.from_file()
        if context:
            config.set_current_context(context)
    except (OSError, KeyError, ValueError, pykube.exceptions.PyKubeError) as e:
        raise PermanentError(f"cannot load Kubernetes credentials: {type(e).__name__}") from e
    adapter = KubernetesHTTPAdapter(config, pool_connections=4, pool_maxsize=pool_size)
    return pykube.HTTPClient(config, timeout=timeout, http_adapter=adapter)
