"""Forged UDP packets and hostile TCP clients, for the tests of issue 9.

Test-only: a raw socket (we are root) sends UDP datagrams with any source
port and any loopback source address -- a port of 0, or a server's own
address and port -- which no ordinary socket can. Everything stays on
127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Iterator

from harness.ports import is_loopback


@contextlib.contextmanager
def raw_udp_sender(source_host: str) -> Iterator[socket.socket]:
    """A raw IPPROTO_UDP socket whose packets leave from ``source_host``.

    The kernel writes the IP header (source = the bound address); the UDP
    header is ours, so the source port is whatever :func:`udp_datagram` says.
    """
    assert is_loopback(source_host), source_host
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        sock.bind((source_host, 0))
        yield sock
    finally:
        sock.close()


def udp_datagram(source_port: int, dest_port: int, payload: bytes) -> bytes:
    """UDP header + payload; checksum 0 means "none", which IPv4 allows (RFC 768)."""
    return struct.pack("!HHHH", source_port, dest_port, 8 + len(payload), 0) + payload


def send_forged(source: tuple[str, int], dest: tuple[str, int], payloads: Iterable[bytes]) -> int:
    """Sends each payload from ``source`` (address, port) to ``dest``; how many."""
    assert is_loopback(dest[0]), dest
    sent = 0
    with raw_udp_sender(source[0]) as sock:
        for payload in payloads:
            sock.sendto(udp_datagram(source[1], dest[1], payload), (dest[0], 0))
            sent += 1
    return sent


def frame(message: bytes) -> bytes:
    """RFC 7766 framing: the two-byte length, then the message."""
    return struct.pack("!H", len(message)) + message


def connect_from(source_host: str, dest: tuple[str, int], timeout: float = 2.0) -> socket.socket:
    """A TCP connection from ``source_host`` (any 127.x address) to ``dest``."""
    assert is_loopback(source_host) and is_loopback(dest[0])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.bind((source_host, 0))
        sock.connect(dest)
    except OSError:
        sock.close()
        raise
    return sock


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed or reset the connection (no blocking)."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET after an abort
        return True
