"""``externalauth run``: configure and start kopf with our handlers."""

from __future__ import annotations

import datetime as dt
import logging
import os

from externalauth.engine.core import Settings


def preflight(*, kubeconfig: str | None, context: str | None) -> None:
    """Fail fast, in one line, when the cluster is unreachable or the CRDs are missing."""
    import requests

    from externalauth import GROUP, VERSION
    from externalauth.errors import PermanentError
    from externalauth.kube import connecting

    client = connecting.connect(kubeconfig=kubeconfig, context=context, pool_size=2, timeout=10)
    try:
        resp = client.get(version=f"{GROUP}/{VERSION}")
    except requests.RequestException as e:
        raise PermanentError(f"cannot reach the API server at {client.url} ({type(e).__name__})") from e
    if resp.status_code == 404:
        raise PermanentError(f"the API server does not serve {GROUP}/{VERSION}: install the CRDs "
                             "(kubectl apply -f crds/)")
    if resp.status_code in (401, 403):
        raise PermanentError(f"the API server refused our credentials (HTTP {resp.status_code})")
    if resp.status_code >= 400:
        raise PermanentError(f"the API server answered HTTP {resp.status_code} for {GROUP}/{VERSION}")


def run(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    peering: str | None,
    standalone: bool,
    metrics_port: int,
    kubeconfig: str | None,
    context: str | None,
    verbose: bool,
    debug: bool,
    validation_interval: dt.timedelta,
    liveness_port: int | None = None,
    metrics_bind_address: str = "127.0.0.1",
) -> int:
    preflight(kubeconfig=kubeconfig, context=context)
    import kopf  # imported late: `externalauth --help` stays fast

    from externalauth import handlers, metrics

    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    kopf.configure(debug=debug, verbose=verbose)
    for name in ("requests_oauthlib", "oauthlib", "urllib3", "kubernetes.client.rest"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not (verbose or debug):
        # kopf logs every handler call on every object at INFO: noise at 10,000 links.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    handlers.Options.namespaces = [] if all_namespaces else list(namespaces)
    handlers.Options.kubeconfig = kubeconfig
    handlers.Options.context = context
    handlers.Options.metrics_port = metrics_port
    metrics.configure(bind_address=metrics_bind_address)  # handlers' metrics.serve() listens there
    handlers.Options.settings = Settings(validation_interval=validation_interval)
    kopf.run(
        clusterwide=all_namespaces or not namespaces,
        namespaces=() if all_namespaces or not namespaces else list(namespaces),
        standalone=standalone or peering is None,
        peering_name=peering,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
    return 0
