"""Where an address points: loopback (this machine's users only) or beyond."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def host_of(url: str) -> str:
    """The host of `scheme://host:port/path` (or of `host:port`), without IPv6 brackets."""
    return urlsplit(url if "://" in url else f"//{url}").hostname or ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
