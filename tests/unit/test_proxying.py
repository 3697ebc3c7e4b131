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


def test_choose_keeps_http_schemes_only_and_honours_no() -> None:
    assert {"https": "http://proxy:3128", "http": "http://proxy:3128"} == choose("https://api:6443", ENV)
    assert {} == choose("https://api:6443", {**ENV, "no": "api"})
