"""kopf's login: the connection settings of our own client, from the same credential source.
I/O (it reads the kubeconfig); it does not import kopf."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from externalauth.errors import PermanentError
from externalauth.kube import config as configs
from externalauth.kube import credentials


@dataclasses.dataclass(frozen=True)
class LoginInfo:
    """kopf's ``ConnectionInfo`` keywords, with the same names: ``kopf.ConnectionInfo(**info.keywords())``."""

    server: str
    ca_path: str | None
    ca_data: str | None
    insecure: bool | None
    token: str | None
    expiration: dt.datetime | None
    certificate_path: str | None
    certificate_data: str | None
    private_key_path: str | None
    private_key_data: str | None
    default_namespace: str
    proxy_url: str | None

    def keywords(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def refuse_impersonation(config: configs.Config) -> None:
    """``externalauth run`` acts as the kubeconfig's user only: kopf's watches cannot send
    ``Impersonate-*`` headers, so half of the operator would act as someone else."""
    if config.impersonation.user is not None:
        raise PermanentError("the kubeconfig user impersonates another (as:), which externalauth run "
                             "does not support (kopf's watches cannot): use a kubeconfig without as:")


class KopfLogin:
    """Called by kopf at start-up, after a 401 and when the credentials it was given
    expire. A second call means the credential handed out before was refused or has
    expired, so the source is told so and gives a newer one (re-reading a rotated file,
    re-running a plugin)."""

    def __init__(self) -> None:
        self._given: dict[int, credentials.Credential] = {}

    def __call__(self, *, kubeconfig: str | None, context: str | None) -> LoginInfo:
        config = configs.load(kubeconfig=kubeconfig, context=context)
        refuse_impersonation(config)
        cluster, user = config.selection.cluster, config.selection.user
        credential: credentials.Credential | None = None
        if config.source is not None:
            given = self._given.get(id(config.source))
            if given is not None:
                config.source.rejected(given)
            credential = config.source.current()
            self._given[id(config.source)] = credential
        certificate = credential.client_certificate if credential is not None else None
        key = credential.client_key if credential is not None else None
        return LoginInfo(
            server=config.server,
            ca_path=None if cluster.get("certificate-authority-data") else cluster.get("certificate-authority"),
            ca_data=cluster.get("certificate-authority-data"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")) or None,
            token=credential.token.reveal() if credential is not None and credential.token is not None else None,
            expiration=credential.expiration if credential is not None else None,
            certificate_path=None if certificate or user.get("client-certificate-data")
            else user.get("client-certificate"),
            certificate_data=certificate or user.get("client-certificate-data"),
            private_key_path=None if key or user.get("client-key-data") else user.get("client-key"),
            private_key_data=key.reveal() if key is not None else user.get("client-key-data"),
            default_namespace=config.namespace,
            proxy_url=cluster.get("proxy-url"),
        )
