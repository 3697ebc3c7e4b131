"""Kubernetes credentials and the HTTP connection to the API server. I/O.

Where the credentials come from, in kubectl's order: ``--kubeconfig`` (one file), else
``$KUBECONFIG`` (several files, merged as kubectl merges them), else the pod's
ServiceAccount (in a pod), else ``~/.kube/config``; ``--context`` picks a context. One
loader serves our own client (:class:`Connection`), kopf's login (:func:`login_info`) and
the CLI, and they share one :mod:`~externalauth.kube.credentials` token source per user.

A :class:`Connection` is one urllib3 connection pool whose TLS trust is exactly the
kubeconfig's (its CA, else the system's; never ``certifi`` or ``REQUESTS_CA_BUNDLE``), whose
client certificate is loaded once into memory, and whose bearer token comes from the token
source (re-read when a ServiceAccount token rotates, re-obtained from an exec plugin when it
expires, and once more after a 401).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
import yaml

from externalauth import __version__
from externalauth.errors import PermanentError
from externalauth.kube import credentials, kubeconfigs
from externalauth.model.names import DEFAULT_OPERATOR_NAMESPACE
from externalauth.model.secure import SecretStr
from externalauth.proxying import proxies_for

#: Where the kubelet mounts a pod's ServiceAccount token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Moves :data:`SERVICE_ACCOUNT_DIR`. Only for tests that emulate a pod on a laptop; a pod
#: never needs it.
SERVICE_ACCOUNT_DIR_ENV = "EXTERNALAUTH_SERVICE_ACCOUNT_DIR"


def service_account_dir() -> str:
    return os.environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR


@dataclasses.dataclass(frozen=True)
class Config:
    """The selected cluster and user, and the user's token source (None: no bearer token)."""

    selection: kubeconfigs.Selection
    source: credentials.TokenSource | None

    @property
    def server(self) -> str:
        return str(self.selection.cluster["server"])

    @property
    def namespace(self) -> str:
        return self.selection.namespace


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


def _kubeconfig_paths(kubeconfig: str | None) -> list[str] | None:
    """The files to merge, or None for the in-cluster configuration."""
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise PermanentError(f"kubeconfig {kubeconfig} does not exist")
        return [os.path.abspath(kubeconfig)]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        paths: list[str] = []
        for entry in listed.split(os.pathsep):
            path = os.path.abspath(os.path.expanduser(entry)) if entry else ""
            if path and path not in paths and os.path.isfile(path):  # kubectl skips missing files
                paths.append(path)
        if not paths:
            raise PermanentError(f"none of the kubeconfig files in KUBECONFIG exist ({listed[:200]})")
        return paths
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(
            os.path.join(service_account_dir(), "token")):
        return None
    home = os.path.expanduser("~/.kube/config")
    if not os.path.isfile(home):
        raise PermanentError("no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG, "
                             "create ~/.kube/config, or run in a pod")
    return [home]


def load_config(*, kubeconfig: str | None = None, context: str | None = None) -> Config:
    paths = _kubeconfig_paths(kubeconfig)
    if paths is None:
        doc = kubeconfigs.in_cluster(host=os.environ["KUBERNETES_SERVICE_HOST"],
                                     port=os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
                                     directory=service_account_dir())
    else:
        doc = kubeconfigs.merge([(path, _read_yaml(path)) for path in paths])
    selection = kubeconfigs.select(doc, context=context)
    return Config(selection=selection,
                  source=credentials.source_for(selection, ca_data=_ca_data(selection.cluster)))


def _ca_data(cluster: Mapping[str, Any]) -> str | None:
    """The cluster's CA bundle, base64-encoded (as an exec plugin is given it), if any."""
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


def _pem(data: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError) as e:
        raise PermanentError(f"kubeconfig {what} is not base64") from e


def _load_client_certificate(context: ssl.SSLContext, user: Mapping[str, Any]) -> None:
    """The user's client certificate, loaded into ``context`` (files written for ``*-data``
    live in a private directory only while :mod:`ssl` reads them)."""
    has_cert = user.get("client-certificate") or user.get("client-certificate-data")
    has_key = user.get("client-key") or user.get("client-key-data")
    if not has_cert and not has_key:
        return
    if not (has_cert and has_key):
        raise PermanentError("kubeconfig user has a client certificate without its key, or a key "
                             "without its certificate")
    try:
        with tempfile.TemporaryDirectory(prefix="externalauth-") as scratch:
            def path_of(key: str) -> str:
                if user.get(key):
                    return str(user[key])
                target = os.path.join(scratch, key)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(_pem(user[f"{key}-data"], f"{key}-data"))
                return target

            context.load_cert_chain(certfile=path_of("client-certificate"), keyfile=path_of("client-key"))
    except (OSError, ssl.SSLError) as e:
        raise PermanentError(f"cannot load the kubeconfig user's client certificate ({type(e).__name__})") from e


def tls_context(config: Config) -> ssl.SSLContext:
    """The TLS settings of the selected cluster and user."""
    cluster = config.selection.cluster
    try:
        if cluster.get("certificate-authority-data"):
            context = ssl.create_default_context(
                cadata=_pem(cluster["certificate-authority-data"], "certificate-authority-data").decode("ascii"))
        elif cluster.get("certificate-authority"):
            context = ssl.create_default_context(cafile=str(cluster["certificate-authority"]))
        else:
            context = ssl.create_default_context()
    except (OSError, ssl.SSLError, UnicodeDecodeError) as e:
        raise PermanentError(f"cannot load the cluster's CA certificate ({type(e).__name__})") from e
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _load_client_certificate(context, config.selection.user)
    return context


class Response:
    """An answer of the API server: status, headers, and the body read whole (``json``,
    ``content``) or line by line as it arrives (``iter_lines``, for watches)."""

    __slots__ = ("_content", "_raw", "_streamed", "headers", "status_code")

    def __init__(self, raw: urllib3.BaseHTTPResponse, *, streamed: bool) -> None:
        self._raw = raw
        self._streamed = streamed
        self.status_code: int = raw.status
        self.headers: Mapping[str, str] = raw.headers
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self._raw.data
        return self._content

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_lines(self) -> Iterator[bytes]:
        """Complete lines of a streamed body (a watch sends one JSON event per line)."""
        pending = b""
        for chunk in self._raw.stream(CHUNK):
            pending += chunk
            if b"\n" not in chunk:
                continue
            *lines, pending = pending.split(b"\n")
            yield from lines
        if pending:
            yield pending

    def shutdown(self) -> None:
        """Unblock a reader in another thread (ends a watch)."""
        self._raw.shutdown()

    def close(self) -> None:
        """A streamed answer's connection is closed (it may be mid-body); a read one is
        already back in the pool."""
        if self._streamed:
            self._raw.close()


#: Bytes read at a time from a streamed answer.
CHUNK = 64 * 1024


class Connection:
    """The API server over one urllib3 connection pool; URLs built from API version,
    namespace and path. Thread-safe. No redirects, no retries (the callers decide), TLS
    trust exactly the kubeconfig's.

    Not ``requests``: it cost about half of the operator's CPU per API call in the storm
    benchmark's profile (preparing, merging settings and hooks, cookies, building the
    response), work this client never needs (docs/benchmarks.md)."""

    def __init__(self, config: Config, *, pool_size: int = 64, timeout: float = 30.0) -> None:
        self.config = config
        self.url = config.server.rstrip("/")
        self.timeout = timeout
        cluster = config.selection.cluster
        self._headers = {"User-Agent": f"externalauth/{__version__}", "Accept": "application/json"}
        tls: dict[str, Any] = {"ssl_context": tls_context(config)}
        if cluster.get("insecure-skip-tls-verify"):
            tls["cert_reqs"] = "CERT_NONE"
        server_name = cluster.get("tls-server-name")
        if server_name:
            tls.update(server_hostname=server_name, assert_hostname=server_name)
        environment = proxies_for(self.url)  # resolved once, not per request
        proxy = cluster.get("proxy-url") or environment.get(urllib.parse.urlsplit(self.url).scheme) \
            or environment.get("all")
        # What goes before a path: the whole origin through a proxy, else the server's path.
        self._prefix: str
        self._pool: urllib3.PoolManager | urllib3.HTTPConnectionPool
        if proxy:
            self._pool = urllib3.ProxyManager(str(proxy), num_pools=2, maxsize=pool_size, block=False, **tls)
            self._prefix = self.url
        else:
            self._pool = urllib3.connection_from_url(self.url, maxsize=pool_size, block=False, **tls)
            self._prefix = urllib.parse.urlsplit(self.url).path.rstrip("/")

    @property
    def namespace(self) -> str:
        """The context's namespace (``default`` when it names none)."""
        return self.config.namespace

    def path_for(self, *, version: str = "v1", namespace: str | None = None, url: str = "") -> str:
        parts = ["api" if version == "v1" else "apis", version]
        if namespace:
            parts += ["namespaces", namespace]
        if url:
            parts.append(url)
        return "/" + "/".join(parts)

    def url_for(self, **kwargs: Any) -> str:
        return self.url + self.path_for(**kwargs)

    def request(self, method: str, *, version: str = "v1", namespace: str | None = None, url: str = "",
                params: Mapping[str, Any] | None = None, data: str | bytes | None = None,
                headers: Mapping[str, str] | None = None, stream: bool = False,
                timeout: float | tuple[float, float] | None = None) -> Response:
        """One request (and one resend with a newer token after a 401). Raises
        :class:`urllib3.exceptions.HTTPError` or :class:`OSError` when no answer came."""
        target = self._prefix + self.path_for(version=version, namespace=namespace, url=url)
        if params:
            target += "?" + urllib.parse.urlencode(params)
        limit = self.timeout if timeout is None else timeout
        how = urllib3.Timeout(connect=limit[0], read=limit[1]) if isinstance(limit, tuple) \
            else urllib3.Timeout(connect=limit, read=limit)
        sent = urllib3.HTTPHeaderDict(self._headers)  # keeps a repeated header (Impersonate-Group)
        if headers:
            for key in headers:
                sent.discard(key)
            sent.extend(headers)
        source = self.config.source
        token = source.current().token if source is not None else None
        while True:
            if token is not None:
                sent["Authorization"] = f"Bearer {token.reveal()}"
            raw = self._pool.urlopen(method, target, body=data, headers=sent, retries=False, redirect=False,
                                     timeout=how, preload_content=not stream)
            if raw.status != 401 or source is None or token is None:
                return Response(raw, streamed=stream)
            source.rejected(token)
            fresh = source.current().token
            if fresh == token:
                return Response(raw, streamed=stream)
            raw.drain_conn()
            raw.release_conn()
            token, source = fresh, None  # one resend

    def get(self, **kwargs: Any) -> Response:
        return self.request("GET", **kwargs)

    def close(self) -> None:
        if isinstance(self._pool, urllib3.PoolManager):
            self._pool.clear()
        else:
            self._pool.close()


def connect(*, kubeconfig: str | None = None, context: str | None = None,
            pool_size: int = 64, timeout: float = 30.0) -> Connection:
    """A connection to the API server, with a connection pool sized for the engine."""
    return Connection(load_config(kubeconfig=kubeconfig, context=context), pool_size=pool_size, timeout=timeout)


@dataclasses.dataclass(frozen=True)
class LoginInfo:
    """What kopf's ``ConnectionInfo`` needs (the same fields, so that kube/ needs no kopf)."""

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


class KopfLogin:
    """kopf's login: the credentials of our own client, from the same token source.

    kopf calls it at start-up, after a 401 and when the credentials it was given expire. A
    second call means the token handed out before was refused or has expired, so the source
    is told so and gives a newer one (re-reading a rotated file, re-running a plugin)."""

    def __init__(self) -> None:
        self._given: dict[int, SecretStr] = {}

    def __call__(self, *, kubeconfig: str | None, context: str | None) -> LoginInfo:
        config = load_config(kubeconfig=kubeconfig, context=context)
        cluster, user = config.selection.cluster, config.selection.user
        token: kubeconfigs.BearerToken | None = None
        if config.source is not None:
            given = self._given.get(id(config.source))
            if given is not None:
                config.source.rejected(given)
            token = config.source.current()
            self._given[id(config.source)] = token.token
        return LoginInfo(
            server=config.server,
            ca_path=None if cluster.get("certificate-authority-data") else cluster.get("certificate-authority"),
            ca_data=cluster.get("certificate-authority-data"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")) or None,
            token=token.token.reveal() if token is not None else None,
            expiration=token.expiration if token is not None else None,
            certificate_path=None if user.get("client-certificate-data") else user.get("client-certificate"),
            certificate_data=user.get("client-certificate-data"),
            private_key_path=None if user.get("client-key-data") else user.get("client-key"),
            private_key_data=user.get("client-key-data"),
            default_namespace=config.namespace,
            proxy_url=cluster.get("proxy-url"),
        )


def own_namespace() -> str:
    """The namespace this process runs in: its pod's, else the default operator namespace."""
    try:
        with open(os.path.join(service_account_dir(), "namespace"), encoding="utf-8") as f:
            return f.read().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE
