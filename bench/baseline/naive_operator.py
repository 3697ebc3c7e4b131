"""A naive ExternalAuthLink operator: the baseline that bench/compare.py runs beside ours.

What a capable engineer writes in an afternoon with kopf, reading the same CRDs and the
same Secret keys (so the same objects drive both operators):

- one ``@kopf.timer`` per ExternalAuthLink, every ``NAIVE_INTERVAL`` seconds (default 5):
  read the token Secret with the official ``kubernetes`` client and return unless
  ``expiry - now <= spec.refreshBefore``;
- when due: read the provider's client secret, exchange the refresh token with
  requests-oauthlib (a fresh ``OAuth2Session`` per refresh), validate the new access token
  at ``spec.validateURL`` if the provider has one, then write the tokens with a plain
  patch (no ``resourceVersion`` precondition) and note the refresh in the link's status;
- providers come from a kopf index (a watch), the client secret from a GET per refresh;
- concurrency: kopf runs sync handlers in a thread pool of ``NAIVE_WORKERS`` threads
  (default 10; compare.py sets it to the same K as our maxConcurrentRefreshes), so at
  most that many refreshes (exchange + validation + write) are in flight per process.

What it does not do, on purpose (that is the comparison): no single-flight beyond kopf's
one-run-at-a-time per timer, no claim across replicas, no compare-and-swap write, no
opt-in label check, and validation before the write (a failed validation drops tokens
that the provider has already rotated). It never logs a token: kopf logs at INFO and the
libraries that would (oauthlib, urllib3, the kubernetes client) only do so at DEBUG.

Run it like any kopf operator::

    KUBECONFIG=... kopf run --standalone -n NS bench/baseline/naive_operator.py
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
import requests
from kubernetes import client, config
from requests_oauthlib import OAuth2Session

GROUP, VERSION = "externalauth.io", "v1alpha1"
INTERVAL = float(os.environ.get("NAIVE_INTERVAL", "5"))
WORKERS = int(os.environ.get("NAIVE_WORKERS", "10"))
DEFAULT_TOKEN_PATH = "/login/oauth/access_token"  # GitHub's, like spec.type github
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

core: client.CoreV1Api | None = None
_ca_files: dict[str, str] = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    global core
    settings.execution.max_workers = WORKERS
    # Without this kopf posts a Kubernetes Event for every timer run ("succeeded").
    settings.posting.level = logging.WARNING
    config.load_kube_config()
    core = client.CoreV1Api()
    logger.info("naive operator started (timer every %.1f s, %d workers)", INTERVAL, WORKERS)


@kopf.index(GROUP, VERSION, "externalauthproviders")
def providers(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: dict(spec)}


def parse_duration(text: str) -> float:
    """'15m', '1h30m', '90s' -> seconds."""
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))


def decoded(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


def ca_file(pem: str) -> str | bool:
    """requests wants a file for extra trust anchors; one file per distinct caBundle."""
    if not pem:
        return True
    key = hashlib.sha256(pem.encode()).hexdigest()
    if key not in _ca_files:
        path = Path(tempfile.gettempdir()) / f"naive-operator-ca-{key[:16]}.pem"
        path.write_text(pem)
        _ca_files[key] = str(path)
    return _ca_files[key]


def token_url(provider: Mapping[str, Any]) -> str:
    return str(provider.get("tokenURL") or provider["baseURL"].rstrip("/") + DEFAULT_TOKEN_PATH)


def client_secret(provider: Mapping[str, Any]) -> str | None:
    ref = provider.get("clientSecretRef")
    if not ref:
        return None
    assert core is not None
    secret = core.read_namespaced_secret(ref["name"], ref["namespace"])
    return decoded(secret.data)[ref["key"]]


def rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.timer(GROUP, VERSION, "externalauthlinks", interval=INTERVAL)
def refresh(spec: kopf.Spec, name: str, namespace: str, patch: kopf.Patch,
            logger: logging.Logger, providers: kopf.Index[str, dict[str, Any]], **_: Any) -> None:
    if spec.get("suspend"):
        return
    assert core is not None
    secret_name = spec["secretName"]
    tokens = decoded(core.read_namespaced_secret(secret_name, namespace).data)
    if "refresh_token" not in tokens:
        return
    now = dt.datetime.now(dt.UTC)
    expiry = dt.datetime.fromisoformat(tokens["expiry"]) if tokens.get("expiry") else now
    if (expiry - now).total_seconds() > parse_duration(spec.get("refreshBefore", "15m")):
        return
    found = providers.get(spec["providerName"])
    if not found:
        raise kopf.TemporaryError(f"provider {spec['providerName']} not found", delay=INTERVAL)
    provider = next(iter(found))
    verify = ca_file(provider.get("caBundle", ""))

    session = OAuth2Session(provider["clientID"], token={
        "access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
        "token_type": tokens.get("token_type", "bearer")})
    with session:
        new = session.refresh_token(token_url(provider), refresh_token=tokens["refresh_token"],
                                    client_id=provider["clientID"], client_secret=client_secret(provider),
                                    verify=verify, timeout=30)

    if provider.get("validateURL") and spec.get("validate", True):
        answer = requests.get(provider["validateURL"], verify=verify, timeout=30,
                              headers={"Authorization": f"Bearer {new['access_token']}"})
        answer.raise_for_status()  # the new tokens are not saved: kopf retries the timer later

    expires = now + dt.timedelta(seconds=int(new.get("expires_in", 8 * 3600)))
    core.patch_namespaced_secret(secret_name, namespace, {"stringData": {
        "access_token": new["access_token"],
        "refresh_token": new.get("refresh_token", tokens["refresh_token"]),
        "token_type": new.get("token_type", "bearer"),
        "expiry": rfc3339(expires)}})
    patch.status["lastRefreshTime"] = rfc3339(now)
    patch.status["expiresAt"] = rfc3339(expires)
    logger.info("refreshed the token in Secret %s", secret_name)
