"""Proxy settings from the environment, resolved once per destination (I/O: reads the env)."""

from __future__ import annotations

import urllib.request

import requests.utils


def proxies_for(url: str) -> dict[str, str]:
    """The environment's proxy settings for ``url``, resolved once (HTTPS_PROXY, NO_PROXY...).

    Sessions run with ``trust_env = False`` so that per-request environment lookups (and
    REQUESTS_CA_BUNDLE, which would replace our trust store) stay out of the hot path."""
    no_proxy = urllib.request.getproxies().get("no")
    if requests.utils.should_bypass_proxies(url, no_proxy=no_proxy):
        return {}
    return {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https", "all")}
