"""Proxy settings from the environment, resolved once per destination (I/O: reads the env).

Standard library only, so that the API-server client and the CLI need no ``requests``."""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from collections.abc import Mapping


def bypasses(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` exempts ``host`` (pure): ``*``, host names and domain suffixes
    (``example.com`` and ``.example.com`` both cover ``a.example.com``), ``host:port``, IP
    addresses and CIDR ranges (``10.0.0.0/8``), as curl and requests read it."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", "").split(","):
        entry = raw.lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, _, entry_port = entry.partition(":")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def choose(url: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The proxies (scheme -> proxy URL) for ``url`` given ``urllib.request.getproxies()``'s
    mapping (pure); empty when ``no`` exempts it."""
    parts = urllib.parse.urlsplit(url)
    if bypasses(parts.hostname or "", parts.port, environment.get("no", "")):
        return {}
    return {k: v for k, v in environment.items() if k in ("http", "https", "all")}


def proxies_for(url: str) -> dict[str, str]:
    """The environment's proxy settings for ``url``, resolved once (HTTPS_PROXY, NO_PROXY...).

    Sessions run with ``trust_env = False`` so that per-request environment lookups (and
    REQUESTS_CA_BUNDLE, which would replace our trust store) stay out of the hot path."""
    return choose(url, urllib.request.getproxies())
