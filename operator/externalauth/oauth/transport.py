"""HTTPS transport: verified TLS with extra trust anchors, a shared connection pool."""

from __future__ import annotations

import ssl
from typing import Any

import certifi
import requests
import requests.adapters

from externalauth import logs
from externalauth.proxying import proxies_for

__all__ = ["TrustingAdapter", "proxies_for", "session_for", "ssl_context"]

# These libraries log request bodies and headers (tokens) at DEBUG: quiet them as soon
# as the token transport is imported, whoever imports it (contract §9.8).
logs.quiet_noisy_loggers()


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System trust (plus certifi's bundle) plus ``ca_bundle``; hostname checks on; TLS 1.2+."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=certifi.where())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        ctx.load_verify_locations(cadata=ca_bundle)
    return ctx


class TrustingAdapter(requests.adapters.HTTPAdapter):
    """An HTTPS adapter whose pools use our SSL context (and refuse plain HTTP)."""

    def __init__(self, ctx: ssl.SSLContext, *, pool_size: int) -> None:
        self._ctx = ctx
        super().__init__(pool_connections=2, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Verification is on (the context requires it); do not swap the trust store.
        super().cert_verify(conn, url, verify=True, cert=cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = None
        conn.ca_cert_dir = None


def session_for(adapter: TrustingAdapter, session: requests.Session | None = None,
                *, proxies: dict[str, str] | None = None) -> requests.Session:
    s = session if session is not None else requests.Session()
    s.mount("https://", adapter)
    s.mount("http://", _RefusePlainHTTP())
    s.trust_env = False
    if proxies:
        s.proxies.update(proxies)
    return s


class _RefusePlainHTTP(requests.adapters.BaseAdapter):
    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise requests.exceptions.InvalidURL("plain http:// is refused: tokens travel only over TLS")

    def close(self) -> None:
        pass
