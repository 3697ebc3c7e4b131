"""``externalauth run``: configure and start kopf with our handlers."""

from __future__ import annotations

import datetime as dt
import logging
import os

from externalauth.engine.settings import Settings
from externalauth.errors import PermanentError
from externalauth.policy import timing
from externalauth.policy.sharding import Shard


def preflight(*, kubeconfig: str | None, context: str | None) -> None:
    """Fail fast, in one line, when the cluster is unreachable or the CRDs are missing."""
    from externalauth import GROUP, VERSION
    from externalauth.errors import NotFoundError
    from externalauth.kube import api, connection, kopf_login, translating

    client = connection.connect(kubeconfig=kubeconfig, context=context, pool_size=2,
                                timeout=timing.PREFLIGHT_TIMEOUT)
    kopf_login.refuse_impersonation(client.config)
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
    if peering is not None:
        # kopf's peering pauses kopf's watches only (the providers), never the engine's own
        # watch threads: it would make a replica look paused while it refreshes. Replicas are
        # all active, kept safe by the claim on each Secret and split by --shard.
        raise PermanentError(f"--peering {peering} is not supported: every replica is active and "
                             "kept safe by its claim on each Secret (use --shard I/N to split the work); "
                             "drop --peering (--standalone is the default)")
    preflight(kubeconfig=kubeconfig, context=context)
    import kopf  # imported late: `externalauth --help` stays fast

    from externalauth import handlers, logs, memory_report
    from externalauth.kube import config


    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    kopf.configure(debug=debug, verbose=verbose,
                   log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logs.quiet_noisy_loggers()  # kopf.configure() put the root at DEBUG with -v/--debug
    if not (verbose or debug):
        # kopf logs every handler call on every object at INFO: noise at 10,000 links.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from externalauth.engine.starting import Options

    operator = handlers.Operator(options=Options(
        namespaces=[] if all_namespaces else list(namespaces),
        kubeconfig=kubeconfig,
        context=context,
        metrics_port=metrics_port,
        metrics_address=metrics_bind_address,
        settings=Settings(validation_interval=validation_interval,
                          revocation_deadline=(revocation_timeout or timing.REVOCATION_DEADLINE).total_seconds(),
                          operator_namespace=operator_namespace or config.own_namespace(),
                          shard=shard or Shard()),
    ))
    memory_report.install(lambda: operator.running.engine if operator.running else None)
    kopf.run(
        clusterwide=all_namespaces or not namespaces,
        namespaces=() if all_namespaces or not namespaces else list(namespaces),
        standalone=True,  # never kopf peering (above): `--standalone` says what is always so
        memo=handlers.memo(operator),
        # The probe listens where /metrics does: every address in a pod (the chart passes
        # 0.0.0.0), loopback for a process started by hand.
        liveness_endpoint=(f"http://{_url_host(metrics_bind_address)}:{liveness_port}/healthz"
                           if liveness_port else None),
    )
    return 0
