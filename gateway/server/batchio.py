"""Batched datagram I/O: which UDP path runs, and raw socket addresses.

The compiled helper ``_batchio`` (``_batchio.c``, built by ``pip install``
where a C compiler and Python's headers are found) reads up to a batch of
datagrams with one ``recvmmsg`` and sends a batch of answers with one
``sendmmsg``, with senders as the kernel's raw ``sockaddr`` bytes. Where it
is missing (build failed, not Linux) or ``--udp-batch off`` is given, the UDP
listener reads with ``recvfrom``/``sendto`` as before. :func:`choose` decides
once at start-up; the log line and the ``udp_batch_io`` gauge say which path
runs.

Raw addresses are decoded (:func:`decode`) only where a Python address is
needed: a log line, a client's access decision (cached per :func:`host_key`).
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any, Protocol

from gateway.options import UDP_BATCH_MODES

# sockaddr_in: family (2 bytes, host order), port (2, network order), address (4).
_V4_HOST = slice(4, 8)
# sockaddr_in6: family, port, flowinfo (4), address (16), scope id (4, host order).
_V6_FLOW = slice(4, 8)
_V6_HOST = slice(8, 24)
_V6_SCOPE = slice(24, 28)
_PORT = slice(2, 4)
# The sending host (and IPv6 scope) in a raw address of each family: the key
# of the per-client decisions, which must not vary with the client's port.
HOST_KEY = {socket.AF_INET: slice(4, 8), socket.AF_INET6: slice(8, 28)}
# Send errors that only mean "not now" (full socket buffer, a signal).
NOT_NOW = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class BatchIO(Protocol):
    """What the listener needs of the helper (the compiled module satisfies it)."""

    MAX_BATCH: int

    def recv(self, fd: int, count: int, /) -> tuple[list[bytes], list[bytes]]:
        """Up to ``count`` waiting datagrams and their senders' raw addresses."""

    def send(
        self, fd: int, replies: list[bytes | None], addresses: list[bytes], /
    ) -> tuple[int, list[tuple[int, int]] | None]:
        """Sends every reply that is not None; (how many were None, failures as (i, errno))."""


def load() -> BatchIO | None:
    """The compiled helper, or None where it was not built."""
    try:
        from gateway.server import _batchio
    except ImportError:
        return None
    return _batchio


def choose(mode: str) -> tuple[BatchIO | None, str]:
    """The helper to use under ``--udp-batch mode`` (None: the Python loop), and why."""
    assert mode in UDP_BATCH_MODES
    if mode == "off":
        return None, "recvfrom/sendto per datagram (--udp-batch off)"
    helper = load()
    if helper is None:
        return None, "recvfrom/sendto per datagram (the compiled helper _batchio is not built)"
    return helper, f"recvmmsg/sendmmsg, up to {helper.MAX_BATCH} datagrams per call"


def decode(raw: bytes) -> tuple[Any, ...]:
    """A raw sockaddr as the socket module gives it: (host, port) or (host, port, flow, scope)."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[_PORT], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[_V4_HOST]), port
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, raw[_V6_HOST])
        scope = int.from_bytes(raw[_V6_SCOPE], sys.byteorder)
        if scope:
            # As getnameinfo (and so the socket module) writes it: fe80::1%eth0.
            try:
                host = f"{host}%{socket.if_indextoname(scope)}"
            except OSError:
                host = f"{host}%{scope}"
        return host, port, int.from_bytes(raw[_V6_FLOW], "big"), scope
    raise ValueError(f"not an IPv4 or IPv6 socket address: family {family}")


def port_is_zero(raw: bytes) -> bool:
    """The sender's port is 0 (forged): no reply can reach it."""
    return raw[_PORT] == b"\x00\x00"
