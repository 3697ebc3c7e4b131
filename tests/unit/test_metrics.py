"""Metrics (contract §7): the listener binds where it is told (loopback by default), the
bind-address option parses, and the new metric families and standard collectors are exposed."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from externalauth import __version__, metrics
from externalauth.cli.main import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_the_listener_binds_only_the_loopback_address_by_default() -> None:
    """A process started by hand is not reachable on another address of the host (127.0.0.2)."""
    port = free_port()
    served = metrics.serve(port)
    try:
        assert (True, False) == (reachable("127.0.0.1", port), reachable("127.0.0.2", port))
    finally:
        if served:
            served[0].shutdown()
            served[0].server_close()


def test_the_listener_binds_the_configured_address() -> None:
    """``--metrics-bind-address ::1``: the listener the engine starts answers there only."""
    server, _ = metrics.serve(0, "::1")
    try:
        host, port = server.server_address[:2]
        assert ("::1", True, False) == (host, reachable("::1", port), reachable("127.0.0.1", port))
    finally:
        server.shutdown()
        server.server_close()


def test_the_new_families_and_standard_collectors_are_exposed() -> None:
    server, _ = metrics.serve(0, "127.0.0.1")
    metrics.TOKENS_LOST.labels(provider="gh", reason="secret_deleted").inc()
    metrics.REFRESH_TOKEN_EXPIRY.labels(namespace="ns", link="l").set(1.5e9)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    expected = [
        f'externalauth_build_info{{version="{__version__}"}} 1.0',
        'externalauth_tokens_lost_total{provider="gh",reason="secret_deleted"} 1.0',
        'externalauth_refresh_token_expiry_timestamp_seconds{link="l",namespace="ns"} 1.5e+09',
        "process_cpu_seconds_total ",
        "python_info{",
        "python_gc_objects_collected_total{",
    ]
    assert [] == [line for line in expected if line not in text]


def test_a_providers_observer_records_its_budget_and_clock_skew() -> None:
    """metrics.observer is what the provider client reports to: requests by code, the
    rate-limit budget the provider announced and its clock skew (issue 10)."""
    observe = metrics.observer("gl")
    observe("validate", 200)
    observe.rate_limit_remaining("validate", 1999.0)
    observe.clock_skew(-600.2)
    registry = metrics.REGISTRY
    assert (1.0, 1999.0, -600.2) == (
        registry.get_sample_value("externalauth_provider_requests_total",
                                  {"provider": "gl", "endpoint": "validate", "code": "200"}),
        registry.get_sample_value("externalauth_provider_ratelimit_remaining",
                                  {"provider": "gl", "endpoint": "validate"}),
        registry.get_sample_value("externalauth_provider_clock_skew_seconds", {"provider": "gl"}))


def test_a_child_looked_up_again_counts_into_the_same_series() -> None:
    """metrics.child keeps each child it looked up: what is counted through it after the
    first look-up is what /metrics shows for its labels, and other labels count apart."""
    before = metrics.REGISTRY.get_sample_value(
        "externalauth_refresh_total", {"provider": "child-test", "result": "success"}) or 0.0
    for _ in range(3):
        metrics.child(metrics.REFRESH_TOTAL, "child-test", "success").inc()
    metrics.child(metrics.REFRESH_TOTAL, "child-test", "transient-error").inc()
    assert (before + 3, 1.0) == (
        metrics.REGISTRY.get_sample_value("externalauth_refresh_total",
                                          {"provider": "child-test", "result": "success"}),
        metrics.REGISTRY.get_sample_value("externalauth_refresh_total",
                                          {"provider": "child-test", "result": "transient-error"}))


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("127.0.0.1", ("127.0.0.1", None), id="an IPv4 address"),
    pytest.param(":8080", ("0.0.0.0", 8080), id="a port alone means every address"),
    pytest.param("0.0.0.0:9090", ("0.0.0.0", 9090), id="every address with a port"),
    pytest.param("::1", ("::1", None), id="a bare IPv6 address"),
    pytest.param("[::]:8080", ("::", 8080), id="an IPv6 address in brackets with a port"),
    pytest.param("localhost", ("localhost", None), id="a host name"),
])
def test_bind_addresses_parse(text: str, expected: tuple[str, int | None]) -> None:
    assert expected == metrics.parse_bind_address(text)


@pytest.mark.parametrize("text", [
    pytest.param("127.0.0.1:99999", id="a port out of range"),
    pytest.param("host:port", id="a port that is not a number"),
    pytest.param("[::1", id="an unclosed bracket"),
    pytest.param("a b", id="a space"),
    pytest.param("evil\x1b[2J", id="an escape sequence"),
])
def test_bad_bind_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        metrics.parse_bind_address(text)


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param([], ("127.0.0.1", None, None), id="loopback and port 8080 by default"),
    pytest.param(["--metrics-bind-address", ":8080"], ("0.0.0.0", 8080, None), id="the chart's :8080"),
    pytest.param(["--metrics-bind-address", "0.0.0.0", "--metrics-port", "9000"], ("0.0.0.0", None, 9000),
                 id="an address and a port apart"),
])
def test_run_takes_a_metrics_bind_address(argv: list[str], expected: tuple[str, int | None, int | None]) -> None:
    args = build_parser().parse_args(["run", *argv])
    assert expected == (*args.metrics_bind_address, args.metrics_port)
