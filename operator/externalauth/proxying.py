"""Proxy settings from the environment, resolved once per destination (I/O: reads the env).

Standard library only, so that the API-server client and the CLI need no ``requests``."""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from collections.abc import Mapping


def bypasses(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` exempts ``host`` on ``port`` (pure): ``*``, host names and domain
    suffixes (``example.com`` and ``.example.com`` both cover ``a.example.com``), ``host:port``
    (only that port: ``port`` is the URL's, its scheme's default when it names none; None,
    an unknown port, matches no ``host:port`` entry), IP addresses and CIDR ranges
    (``10.0.0.0/8``), as curl reads it."""
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
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


_DEFAULT_PORTS = {"https": 443, "http": 80}


def choose(url: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The proxies (scheme -> proxy URL) for ``url`` given ``urllib.request.getproxies()``'s
    mapping (pure); empty when ``no`` exempts it."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    if bypasses(parts.hostname or "", port, environment.get("no", "")):
        return {}
    return {k: v for k, v in environment.items() if k in ("http", "https", "all")}


def proxies_for(url: str) -> dict[str, str]:
    """The environment's proxy settings for ``url``, resolved once (HTTPS_PROXY, NO_PROXY...).

    Sessions run with ``trust_env = False`` so that per-request environment lookups (and
    REQUESTS_CA_BUNDLE, which would replace our trust store) stay out of the hot path."""
    return choose(url, urllib.request.getproxies())
