"""Loopback addresses and free ports for the processes the toolkit starts.

Owns the one rule every server here follows: loopback only, on a port picked free just
before start (UDP and TCP free on the same number, since DNS serves both).
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address literal) is on the loopback interface."""
    return host == "::1" or host.startswith("127.")


def host_port(host: str, port: int) -> str:
    """``host:port`` with brackets around IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host: str = LOOPBACK) -> int:
    """A port number free for both UDP and TCP on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair found on " + host)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct free ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports
