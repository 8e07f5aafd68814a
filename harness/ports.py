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


def free_port_run(count: int, host: str = LOOPBACK) -> int:
    """The first of ``count`` consecutive TCP ports free on ``host`` right now.

    ``--workers N`` serves worker i's metrics on the metrics port + i: every one
    of them must be free, not only the first (a taken one stops that worker).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        base = free_port(host)
        if base + count - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports found on {host}")
