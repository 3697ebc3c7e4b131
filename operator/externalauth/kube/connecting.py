"""Kubernetes credentials: a kubeconfig (with an optional context), the in-cluster service
account, or ``$KUBECONFIG``. One loader serves both our API client and kopf's login."""

from __future__ import annotations

import os

import pykube
from pykube.http import KubernetesHTTPAdapter

from externalauth.errors import PermanentError
from externalauth.proxying import proxies_for

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def load_config(*, kubeconfig: str | None = None, context: str | None = None) -> pykube.KubeConfig:
    try:
        if kubeconfig or os.environ.get("KUBECONFIG"):
            path = kubeconfig or os.environ["KUBECONFIG"].split(os.pathsep)[0]
            if not os.path.exists(path):
                raise PermanentError(f"kubeconfig {path} does not exist")
            config = pykube.KubeConfig.from_file(path)
        elif os.path.exists(SERVICE_ACCOUNT_TOKEN):
            config = pykube.KubeConfig.from_service_account()
        else:
            config = pykube.KubeConfig.from_file()
        if context:
            if context not in config.contexts:
                raise PermanentError(f"kubeconfig has no context {context!r}")
            config.set_current_context(context)
        return config
    except PermanentError:
        raise
    except (OSError, KeyError, ValueError, TypeError, pykube.exceptions.PyKubeError) as e:
        raise PermanentError(f"cannot load Kubernetes credentials ({type(e).__name__})") from e


def connect(*, kubeconfig: str | None = None, context: str | None = None,
            pool_size: int = 64, timeout: float = 30.0) -> pykube.HTTPClient:
    """An HTTP client for the API server, with a connection pool sized for the engine."""
    config = load_config(kubeconfig=kubeconfig, context=context)
    adapter = KubernetesHTTPAdapter(config, pool_connections=4, pool_maxsize=pool_size)
    client = pykube.HTTPClient(config, timeout=timeout, http_adapter=adapter)
    # Resolve the environment's proxy settings once instead of on every request (a large
    # share of the CPU per call in the refresh storm benchmark).
    client.session.proxies.update(proxies_for(client.url))
    client.session.trust_env = False
    return client


def own_namespace() -> str:
    """The namespace this process runs in: its pod's, else the default operator namespace."""
    from externalauth.model.names import DEFAULT_OPERATOR_NAMESPACE

    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE
