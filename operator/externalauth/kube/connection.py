"""The HTTP connection to the API server: TLS, proxy, the pool, and sending one request. I/O.

A :class:`Connection` is one urllib3 connection pool of the one HTTP stack
(:func:`externalauth.transport.open_pool`: the kubeconfig's ``proxy-url``, else the
environment's proxy for the server, else direct; the same TLS context through a proxy's
tunnel) whose TLS trust is exactly the
kubeconfig's (its CA, else the system's; never ``certifi`` or ``REQUESTS_CA_BUNDLE``), whose
client certificate is loaded once into memory, and whose credential comes from the user's
:mod:`~externalauth.kube.credentials` source through
:func:`~externalauth.kube.credentials.authenticated` (the one place a refused credential is
replaced). An exec plugin that answers a client certificate gets a pool of its own, built
again when the plugin hands out a new certificate.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import urllib3
from urllib3._collections import HTTPHeaderDict

from externalauth import __version__, transport
from externalauth.errors import PermanentError
from externalauth.kube import config as configs
from externalauth.kube import credentials

#: Bytes read at a time from a streamed answer.
CHUNK = 64 * 1024
#: A request's time limit, in seconds, for connecting and for each read.
DEFAULT_TIMEOUT = 30.0


def _pem(data: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError) as e:
        raise PermanentError(f"kubeconfig {what} is not base64") from e


def _load_kubeconfig_certificate(context: ssl.SSLContext, user: Mapping[str, Any]) -> None:
    """The kubeconfig user's client certificate (files, or ``*-data`` through private
    temporary files), loaded into ``context``."""
    has_cert = user.get("client-certificate") or user.get("client-certificate-data")
    has_key = user.get("client-key") or user.get("client-key-data")
    if not has_cert and not has_key:
        return
    if not (has_cert and has_key):
        raise PermanentError("kubeconfig user has a client certificate without its key, or a key "
                             "without its certificate")
    try:
        if user.get("client-certificate") and user.get("client-key"):
            context.load_cert_chain(certfile=str(user["client-certificate"]), keyfile=str(user["client-key"]))
            return

        def pem_of(key: str) -> bytes:
            if user.get(key):
                with open(str(user[key]), "rb") as f:
                    return f.read()
            return _pem(user[f"{key}-data"], f"{key}-data")

        credentials.load_certificate_chain(context, certificate=pem_of("client-certificate"),
                                           key=pem_of("client-key"))
    except (OSError, ssl.SSLError) as e:
        raise PermanentError(f"cannot load the kubeconfig user's client certificate ({type(e).__name__})") from e


def tls_context(config: configs.Config, *, credential: credentials.Credential | None = None) -> ssl.SSLContext:
    """The TLS settings of the selected cluster and user (with ``credential``'s client
    certificate, from an exec plugin, in place of the kubeconfig's)."""
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
    if credential is not None and credential.client_certificate is not None and credential.client_key is not None:
        try:
            credentials.load_certificate_chain(context, certificate=credential.client_certificate,
                                               key=credential.client_key.reveal())
        except (OSError, ssl.SSLError, ValueError) as e:
            raise PermanentError("cannot load the client certificate the kubeconfig exec plugin answered "
                                 f"({type(e).__name__})") from e
    else:
        _load_kubeconfig_certificate(context, config.selection.user)
    return context


class Response:
    """An answer of the API server: status, headers, and the body read whole (``json``,
    ``content``) or line by line as it arrives (``iter_lines``, for watches)."""

    __slots__ = ("_content", "_raw", "_streamed", "headers", "status_code")

    def __init__(self, raw: urllib3.BaseHTTPResponse | None, *, streamed: bool, status: int = 0,
                 headers: Mapping[str, str] | None = None, content: bytes | None = None) -> None:
        """From urllib3's answer ``raw``; or, with ``raw`` None, an answer already read whole
        (``status``, ``headers``, ``content``)."""
        self._raw = raw
        self._streamed = streamed
        self.status_code: int = raw.status if raw is not None else status
        self.headers: Mapping[str, str] = raw.headers if raw is not None else (headers or {})
        self._content: bytes | None = content

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self._raw.data if self._raw is not None else b""
        return self._content

    def json(self) -> Any:
        return orjson.loads(self.content)

    def iter_lines(self) -> Iterator[bytes]:
        """Complete lines of a streamed body (a watch sends one JSON event per line)."""
        if self._raw is None:
            yield from self.content.splitlines()
            return
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
        if self._raw is not None:
            self._raw.shutdown()

    def close(self) -> None:
        """A streamed answer's connection is closed (it may be mid-body); a read one is
        already back in the pool."""
        if self._streamed and self._raw is not None:
            self._raw.close()

    def discard(self) -> None:
        """The answer is not wanted (a 401 about to be resent): its connection goes back
        (an answer read whole gave it back already)."""
        if self._raw is not None:
            self._raw.drain_conn()
            self._raw.release_conn()


#: No retries and no redirects (the callers decide), built once instead of per request.
_NO_RETRIES = urllib3.Retry(total=False, redirect=False)


def _limits(limit: float | tuple[float, float] | None) -> tuple[float | None, float | None]:
    """(connect, read) from (connect, read), one limit for both, or None or <= 0 for none."""
    if isinstance(limit, tuple):
        return limit
    if limit is None or limit <= 0:
        return None, None
    return limit, limit


def _timeout_of(limit: float | tuple[float, float] | None) -> urllib3.Timeout:
    connect, read = _limits(limit)
    return urllib3.Timeout(connect=connect, read=read)


@dataclasses.dataclass(frozen=True)
class _Pool:
    """The pool manager of the one HTTP stack (:func:`transport.open_pool`: the kubeconfig's
    ``proxy-url``, else the environment's proxy, else direct) and its pool for the server,
    looked up once (not per request)."""

    manager: urllib3.PoolManager
    server: urllib3.HTTPConnectionPool
    #: Short requests' connections when nothing stands between (no proxy, no TLS server
    #: name of the kubeconfig's own), else None (everything through ``server``).
    direct: transport.Direct | None = None

    def clear(self) -> None:
        self.manager.clear()
        if self.direct is not None:
            self.direct.clear()


class Connection:
    """The API server over one urllib3 connection pool; URLs built from API version,
    namespace and path. Thread-safe. No redirects, no retries (the callers decide), TLS
    trust exactly the kubeconfig's.

    ``timeout`` (seconds, None: none) bounds each request unless the request says otherwise
    (a watch does). Not ``requests``: it cost about half of the operator's CPU per API call
    in the storm benchmark's profile (preparing, merging settings and hooks, cookies,
    building the response), work this client never needs (docs/benchmarks.md)."""

    def __init__(self, config: configs.Config, *, pool_size: int = 64,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.url = config.server.rstrip("/")
        self.timeout = timeout
        self._pool_size = pool_size
        # Built once; copied per request. A plain dict unless an impersonation header repeats
        # (groups, extras): copying a dict is several times cheaper than an HTTPHeaderDict.
        base = {"User-Agent": f"externalauth/{__version__}", "Accept": "application/json"}
        impersonation = config.impersonation.headers()
        self._headers: dict[str, str] | HTTPHeaderDict
        if len({name.lower() for name, _ in impersonation}) == len(impersonation):
            self._headers = {**base, **dict(impersonation)}
        else:
            self._headers = HTTPHeaderDict(base)
            for name, value in impersonation:
                self._headers.add(name, value)
        self._timeout = _timeout_of(timeout)
        self._limits = _limits(timeout)
        self._lock = threading.Lock()
        # The pool and the exec plugin's client certificate it was built with (None: the
        # kubeconfig's own TLS identity).
        self._pool: tuple[tuple[str, str] | None, _Pool] | None = None
        # What goes before a path: the server's path, or the whole URL for a plain-http
        # server behind a forwarding proxy (set with the first pool).
        self._prefix = urllib.parse.urlsplit(self.url).path.rstrip("/")
        if not isinstance(config.source, credentials.ExecPlugin):  # a plugin runs at the first request
            self._pool = (None, self._new_pool(None))  # a bad CA or certificate fails here

    def _new_pool(self, credential: credentials.Credential | None) -> _Pool:
        cluster = self.config.selection.cluster
        tls: dict[str, Any] = {}
        if cluster.get("insecure-skip-tls-verify"):
            tls["cert_reqs"] = "CERT_NONE"
        server_name = cluster.get("tls-server-name")
        if server_name:
            tls.update(server_hostname=server_name, assert_hostname=server_name)
        proxy = cluster.get("proxy-url")
        context = tls_context(self.config, credential=credential)
        manager = transport.open_pool(self.url, context, maxsize=self._pool_size,
                                      proxy=str(proxy) if proxy else None, **tls)
        proxied = isinstance(manager, urllib3.ProxyManager)
        if proxied and self.url.startswith("http://"):
            self._prefix = self.url  # a forwarding proxy is sent the whole URL
        direct = None if proxied or server_name else transport.Direct(self.url, context, maxsize=self._pool_size)
        return _Pool(manager, manager.connection_from_url(self.url), direct)

    def _pool_for(self, credential: credentials.Credential | None) -> _Pool:
        """The pools whose TLS identity is ``credential``'s client certificate, if it has one."""
        key = None
        if credential is not None and credential.client_certificate is not None and credential.client_key:
            key = (credential.client_certificate, credential.client_key.fingerprint())
        held = self._pool
        if held is not None and held[0] == key:
            return held[1]
        with self._lock:
            if self._pool is None or self._pool[0] != key:
                old, self._pool = self._pool, (key, self._new_pool(credential))
                if old is not None:
                    old[1].clear()
            return self._pool[1]

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
                params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
                data: str | bytes | None = None, headers: Mapping[str, str] | None = None,
                stream: bool = False, timeout: float | tuple[float, float] | None = None) -> Response:
        """One request, sent again once with a newer credential after a 401
        (:func:`credentials.authenticated`). Raises :class:`urllib3.exceptions.HTTPError` or
        :class:`OSError` when no answer came. ``timeout``: this request's limit (connect,
        read), else the connection's."""
        target = self._prefix + self.path_for(version=version, namespace=namespace, url=url)
        if params:
            target += "?" + urllib.parse.urlencode(params)
        body = data.encode() if isinstance(data, str) else data

        def send(credential: credentials.Credential | None) -> Response:
            sent = self._headers.copy()
            if headers:
                sent.update(headers)
            if credential is not None and credential.token is not None:
                sent["Authorization"] = f"Bearer {credential.token.reveal()}"
            pools = self._pool_for(credential)
            if pools.direct is not None and not stream:
                status, answer_headers, content = pools.direct.request(
                    method, target, body=body, headers=sent,
                    limits=self._limits if timeout is None else _limits(timeout))
                return Response(None, streamed=False, status=status, headers=answer_headers, content=content)
            raw = pools.server.urlopen(
                method, target, body=body, headers=sent, retries=_NO_RETRIES, redirect=False,
                timeout=self._timeout if timeout is None else _timeout_of(timeout), preload_content=not stream)
            return Response(raw, streamed=stream)

        return credentials.authenticated(self.config.source, send)

    def close(self) -> None:
        held = self._pool
        if held is not None:
            held[1].clear()


def connect(*, kubeconfig: str | None = None, context: str | None = None, impersonate: str | None = None,
            impersonate_groups: Sequence[str] = (), pool_size: int = 64,
            timeout: float | None = DEFAULT_TIMEOUT) -> Connection:
    """A connection to the API server found as kubectl finds it (:func:`config.load`).

    ``impersonate``/``impersonate_groups`` are kubectl's ``--as``/``--as-group``; ``timeout``
    its ``--request-timeout`` in seconds (None or 0: no limit)."""
    loaded = configs.load(kubeconfig=kubeconfig, context=context, impersonate=impersonate,
                          impersonate_groups=impersonate_groups)
    return Connection(loaded, pool_size=pool_size, timeout=timeout)
