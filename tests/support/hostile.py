"""Forged UDP packets, hostile TCP clients and a gateway to count them (issue 9).

Test-only: a raw socket (we are root) sends UDP datagrams with any source
port and any loopback source address -- a port of 0, or a server's own
address and port -- which no ordinary socket can; TCP clients connect from
any 127.x address, so one test can play many clients. Everything stays on
127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence

import dns.exception
import dns.message
import dns.query
import dns.rcode

from harness.gateway import METRIC_PREFIX, GatewayProcess, scrape_metrics
from harness.ports import LOOPBACK, free_port, is_loopback

# The per-transport query counters (``queries_total`` with a ``transport`` label).
UDP_QUERIES = 'queries_total{transport="udp"}'
TCP_QUERIES = 'queries_total{transport="tcp"}'


class MeteredGateway(GatewayProcess):
    """The embedded catalog, an upstream nobody answers on, and metrics to read."""

    def __init__(
        self, *args: str, upstream: str = "127.0.0.1:9", launcher: Sequence[str] | None = None
    ) -> None:
        self.metrics_port = free_port()
        super().__init__(
            "--upstream", upstream,
            "--metrics-listen", f"{LOOPBACK}:{self.metrics_port}",
            *args, probe_name="consul.", launcher=launcher,
        )  # fmt: skip

    def counter(self, name: str) -> float:
        """A counter (``name`` without ``_total``) or gauge, without the ``dns_gateway_``
        prefix, or a whole sample key such as ``queries_total{transport="udp"}``; 0 for
        an event counter that has not counted yet (it appears with its first event)."""
        values = scrape_metrics(f"{LOOPBACK}:{self.metrics_port}")
        for key in (f"{name}_total", name):
            if METRIC_PREFIX + key in values:
                return values[METRIC_PREFIX + key]
        return 0.0

    def rss(self) -> int:
        """The gateway's resident memory in bytes (VmRSS)."""
        assert self.pid is not None
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def tcp_answers(self, name: str = "web.service.consul", *, source: str = LOOPBACK) -> bool:
        """Whether one TCP query from ``source`` gets a NOERROR answer."""
        query = dns.message.make_query(name, "A")
        try:
            reply = dns.query.tcp(query, self.host, port=self.port, timeout=3, source=source)
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return reply.rcode() == dns.rcode.NOERROR

    def udp_answers(self, name: str = "web.service.consul") -> bool:
        query = dns.message.make_query(name, "A")
        try:
            reply = dns.query.udp(query, self.host, port=self.port, timeout=3)
        except (OSError, dns.exception.DNSException):
            return False
        return reply.rcode() == dns.rcode.NOERROR


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


# The first byte of Linux's struct tcp_info is the connection state.
_TCP_ESTABLISHED = 1


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed or reset the connection.

    Read from the kernel's TCP state, not with recv(): replies still buffered
    for us would hide the close behind them.
    """
    if sock.fileno() < 0:
        return True
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_ESTABLISHED
