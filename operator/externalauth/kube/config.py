"""Finding and reading the Kubernetes client configuration, as kubectl does. I/O.

Where the credentials come from (:func:`~externalauth.kube.kubeconfigs.files_to_load`):
``--kubeconfig`` (one file), else ``$KUBECONFIG`` (several files, merged as kubectl merges
them), else ``~/.kube/config``; the pod's ServiceAccount only when there is no kubeconfig.
``--context`` picks a context; ``--as``/``--as-group`` (or the user's ``as``/``as-groups``)
whom to act as. One loader serves the operator's client, kopf's login and the CLI, and they
share one :mod:`~externalauth.kube.credentials` source per user.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from externalauth.errors import PermanentError
from externalauth.kube import credentials, kubeconfigs
from externalauth.model.names import DEFAULT_OPERATOR_NAMESPACE

#: Where the kubelet mounts a pod's ServiceAccount token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Moves :data:`SERVICE_ACCOUNT_DIR`. Only for tests that emulate a pod on a laptop; a pod
#: never needs it.
SERVICE_ACCOUNT_DIR_ENV = "EXTERNALAUTH_SERVICE_ACCOUNT_DIR"


def service_account_dir() -> str:
    return os.environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR


@dataclasses.dataclass(frozen=True)
class Config:
    """The selected cluster and user, the user's credential source (None: no credential
    beyond the kubeconfig's client certificate), and whom the requests act as."""

    selection: kubeconfigs.Selection
    source: credentials.CredentialSource | None
    impersonation: kubeconfigs.Impersonation = dataclasses.field(default_factory=kubeconfigs.Impersonation)

    @property
    def server(self) -> str:
        return str(self.selection.cluster["server"])

    @property
    def namespace(self) -> str:
        return self.selection.namespace

    @property
    def ca_data(self) -> str | None:
        """The cluster's CA bundle, base64-encoded (as an exec plugin is given it), if any."""
        cluster = self.selection.cluster
        if cluster.get("certificate-authority-data"):
            return str(cluster["certificate-authority-data"])
        path = cluster.get("certificate-authority")
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                return base64.b64encode(f.read()).decode("ascii")
        except OSError as e:
            raise PermanentError(f"cannot read the cluster's CA certificate {path} ({type(e).__name__})") from e


def _read_yaml(path: str) -> Mapping[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise PermanentError(f"cannot read kubeconfig {path} ({type(e).__name__})") from e
    except yaml.YAMLError as e:
        raise PermanentError(f"kubeconfig {path} is not valid YAML") from e
    if doc is not None and not isinstance(doc, Mapping):
        raise PermanentError(f"kubeconfig {path} is not a mapping")
    return doc


def _in_cluster_possible() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        os.path.join(service_account_dir(), "token"))


def load(*, kubeconfig: str | None = None, context: str | None = None, impersonate: str | None = None,
         impersonate_groups: Sequence[str] = ()) -> Config:
    """The configuration kubectl would use with the same flags and environment."""
    paths = kubeconfigs.files_to_load(
        flag=kubeconfig, env=os.environ.get("KUBECONFIG", ""), home=os.path.expanduser("~/.kube/config"),
        in_cluster=_in_cluster_possible(), exists=os.path.isfile,
        absolute=lambda p: os.path.abspath(os.path.expanduser(p)), separator=os.pathsep)
    if paths is None:
        doc = kubeconfigs.in_cluster(host=os.environ["KUBERNETES_SERVICE_HOST"],
                                     port=os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
                                     directory=service_account_dir())
    else:
        doc = kubeconfigs.merge([(path, _read_yaml(path)) for path in paths])
    selection = kubeconfigs.select(doc, context=context)
    acting = kubeconfigs.impersonation(selection.user, as_user=impersonate, as_groups=impersonate_groups)
    config = Config(selection=selection, source=None, impersonation=acting)
    return dataclasses.replace(config, source=credentials.source_for(selection, ca_data=config.ca_data))


def own_namespace() -> str:
    """The namespace this process runs in: its pod's, else the default operator namespace."""
    try:
        with open(os.path.join(service_account_dir(), "namespace"), encoding="utf-8") as f:
            return f.read().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE
