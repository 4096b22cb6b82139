"""Free TCP ports for the servers tests start, chosen below the kernel's ephemeral range.

A port found by binding port 0 comes from the ephemeral range and is free again once that socket closes: a
server that takes ~40 s to bind it (`ltx2 server`, deployments/ci-run.sh) can lose it to another bind(0) meanwhile
-- Prefect's test harness picks its port that way -- and then every flow talks to the wrong server until that one
stops (seen once in CI: 45 tests failed with "connection refused"). Below the ephemeral range no bind(0) and no
outgoing connection ever lands, and this process never hands out the same port twice.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on now, outside the ephemeral range, not handed out before here."""
    low = _ephemeral_low()
    for port in random.sample(range(max(1024, low - 12_000), low), 200):
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free TCP port on {host} below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
