"""``externalauth run``: configure and start kopf with our handlers."""

from __future__ import annotations

import datetime as dt
import logging
import os

from externalauth.engine.settings import Settings
from externalauth.policy import timing
from externalauth.policy.sharding import Shard


def preflight(*, kubeconfig: str | None, context: str | None) -> None:
    """Fail fast, in one line, when the cluster is unreachable or the CRDs are missing."""
    from externalauth import GROUP, VERSION
    from externalauth.errors import NotFoundError, PermanentError
    from externalauth.kube import api, connecting, translating

    client = connecting.connect(kubeconfig=kubeconfig, context=context, pool_size=2, timeout=10)
    what = f"checking that the API server serves {GROUP}/{VERSION}"
    try:
        translating.json_object(api.send(client, "GET", what=what, version=f"{GROUP}/{VERSION}"), what=what)
    except NotFoundError as e:
        raise PermanentError(f"the API server does not serve {GROUP}/{VERSION}: install the CRDs "
                             "(kubectl apply -f crds/)") from e


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
    log_format: str = "plain",
    validation_interval: dt.timedelta,
    revocation_timeout: dt.timedelta | None = None,
    liveness_port: int | None = None,
    operator_namespace: str | None = None,
    shard: Shard | None = None,
    metrics_bind_address: str = "127.0.0.1",
) -> int:
    preflight(kubeconfig=kubeconfig, context=context)
    import kopf  # imported late: `externalauth --help` stays fast

    from externalauth import handlers, logs, memory_report
    from externalauth.kube import connecting

    memory_report.install(lambda: handlers.State.running.engine if handlers.State.running else None)

    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    kopf.configure(debug=debug, verbose=verbose,
                   log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logs.quiet_noisy_loggers()  # kopf.configure() put the root at DEBUG with -v/--debug
    if not (verbose or debug):
        # kopf logs every handler call on every object at INFO: noise at 10,000 links.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from externalauth.engine.starting import Options

    handlers.State.options = Options(
        namespaces=[] if all_namespaces else list(namespaces),
        kubeconfig=kubeconfig,
        context=context,
        metrics_port=metrics_port,
        metrics_address=metrics_bind_address,
        settings=Settings(validation_interval=validation_interval,
                          revocation_deadline=(revocation_timeout or timing.REVOCATION_DEADLINE).total_seconds(),
                          operator_namespace=operator_namespace or connecting.own_namespace(),
                          shard=shard or Shard()),
    )
    kopf.run(
        clusterwide=all_namespaces or not namespaces,
        namespaces=() if all_namespaces or not namespaces else list(namespaces),
        standalone=standalone or peering is None,
        peering_name=peering,
        # The probe listens where /metrics does: every address in a pod (the chart passes
        # 0.0.0.0), loopback for a process started by hand.
        liveness_endpoint=(f"http://{_url_host(metrics_bind_address)}:{liveness_port}/healthz"
                           if liveness_port else None),
    )
    return 0
