"""Prometheus metrics (contract §7). Labels never carry a secret. I/O: :func:`serve` listens."""

from __future__ import annotations

import ipaddress
import re
import threading
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from externalauth import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# The standard process_*, python_gc_* and python_info collectors, on our registry.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

REFRESH_TOTAL = Counter(
    "externalauth_refresh_total", "Token refreshes by outcome.", ["provider", "result"],
    registry=REGISTRY,
)
REFRESH_DURATION = Histogram(
    "externalauth_refresh_duration_seconds", "Token exchange plus persist, in seconds.",
    ["provider"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UNSAVED_DURATION = Histogram(
    "externalauth_refresh_unsaved_seconds",
    "How long a new token existed only in the operator's memory: from the provider's answer "
    "to the Secret write landing (a hard kill inside it loses the token).",
    ["provider"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROVIDER_REQUESTS = Counter(
    "externalauth_provider_requests_total", "HTTP requests to providers (code 0: no response).",
    ["provider", "endpoint", "code"], registry=REGISTRY,
)
VALIDATION_TOTAL = Counter(
    "externalauth_validation_total", "Token validations by outcome.", ["provider", "result"],
    registry=REGISTRY,
)
SECRET_WRITE_CONFLICTS = Counter(
    "externalauth_secret_write_conflicts_total",
    "Compare-and-swap writes of token Secrets that got 409 Conflict.", registry=REGISTRY,
)
TOKEN_EXPIRY = Gauge(
    "externalauth_token_expiry_timestamp_seconds", "Access-token expiry (Unix time).",
    ["namespace", "link"], registry=REGISTRY,
)
LINKS = Gauge("externalauth_links", "ExternalAuthLinks by provider and readiness.",
              ["provider", "ready"], registry=REGISTRY)
REFRESH_TOKEN_EXPIRY = Gauge(
    "externalauth_refresh_token_expiry_timestamp_seconds",
    "Refresh-token expiry (Unix time), when the provider tells it.", ["namespace", "link"], registry=REGISTRY,
)
TOKENS_LOST = Counter(
    "externalauth_tokens_lost_total",
    "Tokens obtained from a provider that could not be stored (the reason is a fixed word).",
    ["provider", "reason"], registry=REGISTRY,
)
REVOCATIONS = Counter(
    "externalauth_revocations_total",
    "Grants revoked at the provider when a link with revokeOnDelete was deleted, by outcome "
    "(revoked, failed, unsupported).", ["provider", "result"], registry=REGISTRY,
)
PROVIDER_RATELIMIT_REMAINING = Gauge(
    "externalauth_provider_ratelimit_remaining",
    "Request budget the provider says is left (its x-ratelimit-remaining / ratelimit-remaining), "
    "from its last answer on that endpoint.", ["provider", "endpoint"], registry=REGISTRY,
)
PROVIDER_CLOCK_SKEW = Gauge(
    "externalauth_provider_clock_skew_seconds",
    "The provider's clock minus the operator's, from the Date header of its last answer.",
    ["provider"], registry=REGISTRY,
)
BUILD_INFO = Gauge("externalauth_build_info", "Always 1; the operator's version.", ["version"], registry=REGISTRY)
BUILD_INFO.labels(version=__version__).set(1)

M = TypeVar("M", bound=MetricWrapperBase)
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, looked up once: ``labels`` checks the values and takes a
    lock at every call (~1 us, several a refresh). As many entries as the metrics have
    children. Not for a metric whose children are removed (TOKEN_EXPIRY's, LINKS' gauge
    goes up and down but stays): the child kept here would count unseen."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found  # type: ignore[return-value]

DEFAULT_BIND_ADDRESS = "127.0.0.1"  # a process started by hand; the chart passes ":8080"
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def parse_bind_address(text: str) -> tuple[str, int | None]:
    """``--metrics-bind-address``: ``HOST``, ``HOST:PORT``, ``:PORT`` (every address),
    ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address. Raises ValueError with a message."""
    value = text.strip()
    port: int | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text[:60]!r} is not an address like 127.0.0.1, :8080 or [::1]:8080")
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{text[:60]!r} has no valid port (0-65535)")
        port = int(port_text)
    host = host or "0.0.0.0"  # noqa: S104 - ":8080" means every address, as in controller-runtime
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{text[:60]!r} is not an IP address or a host name") from None
    return host, port


def serve(port: int, addr: str = DEFAULT_BIND_ADDRESS) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr`` and ``port``."""
    return start_http_server(port, addr=addr, registry=REGISTRY)


class ProviderObserver:
    """What one provider's answers say, into the metrics: requests by code, the rate-limit
    budget left and the clock skew (an ``oauth.exchanging.AnswerObserver``)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __call__(self, endpoint: str, code: int) -> None:
        child(PROVIDER_REQUESTS, self.provider, endpoint, str(code)).inc()

    def rate_limit_remaining(self, endpoint: str, remaining: float) -> None:
        child(PROVIDER_RATELIMIT_REMAINING, self.provider, endpoint).set(remaining)

    def clock_skew(self, seconds: float) -> None:
        child(PROVIDER_CLOCK_SKEW, self.provider).set(seconds)


def observer(provider: str) -> ProviderObserver:
    return ProviderObserver(provider)
