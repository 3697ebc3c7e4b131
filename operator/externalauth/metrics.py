"""Prometheus metrics (contract §7). Labels never carry a secret."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

REFRESH_TOTAL = Counter(
    "externalauth_refresh_total", "Token refreshes by outcome.", ["provider", "result"],
    registry=REGISTRY,
)
REFRESH_DURATION = Histogram(
    "externalauth_refresh_duration_seconds", "Token exchange plus persist, in seconds.",
    ["provider"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
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
TOKENS_LOST = Counter(
    "externalauth_tokens_lost_total",
    "Tokens obtained from a provider that could not be stored (reason: gone, invalid).",
    ["provider", "reason"], registry=REGISTRY,
)
LINKS = Gauge("externalauth_links", "ExternalAuthLinks by provider and readiness.",
              ["provider", "ready"], registry=REGISTRY)


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a metrics endpoint
    start_http_server(port, addr=addr, registry=REGISTRY)


def observer(provider: str):  # type: ignore[no-untyped-def]
    def observe(endpoint: str, code: int) -> None:
        PROVIDER_REQUESTS.labels(provider=provider, endpoint=endpoint, code=str(code)).inc()
    return observe
