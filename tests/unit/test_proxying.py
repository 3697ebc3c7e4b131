"""NO_PROXY matching and proxy choice (pure)."""

from __future__ import annotations

import pytest

from externalauth.proxying import bypasses, choose

ENV = {"https": "http://proxy:3128", "http": "http://proxy:3128", "ftp": "ftp://x"}


@pytest.mark.parametrize(("host", "port", "no_proxy", "expected"), [
    ("api.example.com", 443, "", False),
    ("api.example.com", 443, "*", True),
    ("api.example.com", 443, "example.com", True),
    ("api.example.com", 443, ".example.com", True),
    ("example.com", 443, ".example.com", True),
    ("notexample.com", 443, "example.com", False),
    ("api.example.com", 443, "example.com:6443", False),
    ("api.example.com", 6443, "example.com:6443", True),
    ("10.1.2.3", 443, "10.0.0.0/8", True),
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("127.0.0.1", 6443, "localhost,127.0.0.1", True),
    ("[::1]", 6443, "::1", True),
    ("kubernetes.default.svc", 443, " foo , .svc ", True),
    ("API.Example.COM", 443, "example.com", True),
    ("10.1.2.3", 443, "10.1.2.3.example.com", False),
])
def test_no_proxy(host: str, port: int, no_proxy: str, expected: bool) -> None:
    assert expected == bypasses(host, port, no_proxy)


@pytest.mark.parametrize(("url", "no_proxy", "direct"), [
    pytest.param("https://api.example.com/token", "api.example.com:8443", False,
                 id="host:8443 does not exempt a URL without a port (that is 443)"),
    pytest.param("https://api.example.com/token", "api.example.com:443", True,
                 id="host:443 exempts a URL without a port (https's default)"),
    pytest.param("https://api.example.com:8443/token", "api.example.com:8443", True,
                 id="host:8443 exempts the same explicit port"),
    pytest.param("https://api.example.com:443/token", "api.example.com:443", True,
                 id="host:443 exempts an explicit 443"),
    pytest.param("https://api.example.com:8443/token", "api.example.com:443", False,
                 id="host:443 does not exempt another explicit port"),
    pytest.param("http://api.example.com/token", "api.example.com:80", True,
                 id="host:80 exempts an http URL without a port"),
    pytest.param("https://api.example.com/token", "api.example.com", True, id="a host without a port exempts all"),
])
def test_a_no_proxy_port_is_compared_with_the_urls_port_or_its_default(url: str, no_proxy: str,
                                                                        direct: bool) -> None:
    """Security review finding 1: an entry host:port applied to URLs without an explicit port,
    sending a provider direct that should have gone through the proxy."""
    assert direct == (choose(url, {**ENV, "no": no_proxy}) == {})


def test_choose_keeps_http_schemes_only_and_honours_no() -> None:
    assert {"https": "http://proxy:3128", "http": "http://proxy:3128"} == choose("https://api:6443", ENV)
    assert {} == choose("https://api:6443", {**ENV, "no": "api"})
