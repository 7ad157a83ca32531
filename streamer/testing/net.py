"""Loopback ports for test servers."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, below the ephemeral range.

    Below, because a client that keeps reconnecting to a closed port inside the
    ephemeral range can be handed that very port as its source port and connect to
    itself (TCP simultaneous open), and a server restarted on it then cannot bind.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, max(10_001, _ephemeral_low()))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
