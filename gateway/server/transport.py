"""UDP and TCP listeners: framing, limits and timeouts; no DNS decisions.

Both hand each message to the resolver's fast path first and fall back to
the slow path with a reply function. Any exception is caught here and
counted: a packet can never take the server down.

Access control and UDP limits (``gateway.server.access``,
``gateway.server.ratelimit``) are applied through a :class:`Gate`, which
caches the decision per client address. A UDP listener that hears only
loopback clients gets no gate and runs the loop without any check; other
UDP listeners pay one dict lookup per packet (plus the limits for clients
that have them). TCP decides once per connection.

TCP follows RFC 7766: two-byte length framing, several queries per
connection (pipelined; answers may come back out of order, 6.2.1.1), an
idle timeout, and a cap on concurrent connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from typing import Any, cast

from gateway.dns.fastpath import FastAnswer
from gateway.server.access import Access, AccessPolicy, Client
from gateway.server.ratelimit import UdpLimits
from gateway.server.resolver import Resolver

log = logging.getLogger(__name__)

# Replies stay queued for at most this many bytes per TCP client before we
# stop reading from it (a client that never reads cannot exhaust memory).
TCP_WRITE_HIGH_WATER = 256 * 1024
# Datagrams handled per reader wake-up, and the largest one read.
UDP_BATCH = 64
UDP_RECV_SIZE = 65535
# Room for bursts while the loop is busy (the kernel caps it at rmem_max).
UDP_SOCKET_BUFFER = 4 * 1024 * 1024
# Client decisions cached per address, about 230 bytes each (tracemalloc):
# at most ~4 MB. The cache starts over when full, so a flood of forged
# sources costs one classification (a few us) per packet, never memory.
MAX_CACHED_PEERS = 16384
# A peer: the fast path it may use (None: none, slow path decides) and its decision.
Peer = tuple[FastAnswer | None, Client]
# A TCP connection whose peer the kernel cannot name: allowed nothing.
_UNKNOWN_PEER = Client(Access.NONE, False, b"")


class Gate:
    """Per-client decisions for the listeners that need them.

    ``peers`` is read directly by the UDP loop (one dict lookup per packet);
    :meth:`peer` fills it.
    """

    def __init__(
        self, resolver: Resolver, policy: AccessPolicy, limits: UdpLimits, *, drop_denied: bool
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.peers: dict[str, Peer] = {}
        self.drop_denied = drop_denied
        self._fast: dict[Access, FastAnswer | None] = {
            Access.NONE: None,
            Access.LOCAL: resolver.answer_fast_local,
            Access.FULL: resolver.answer_fast,
        }

    def peer(self, host: str) -> Peer:
        client = self.policy.classify(host)
        if len(self.peers) >= MAX_CACHED_PEERS:
            self.peers.clear()
        peer = self.peers[host] = (self._fast[client.access], client)
        return peer


class UdpListener:
    """A UDP socket read straight from the event loop's reader callback.

    No asyncio protocol/transport pair: measured on the 2-core machines,
    recvfrom/sendto on the socket from an ``add_reader`` callback answers
    ~15% more queries per second than uvloop's datagram transport, whose
    per-datagram bookkeeping dominated the profile of the fast path.
    """

    def __init__(self, resolver: Resolver, sock: socket.socket, gate: Gate | None = None) -> None:
        self._resolver = resolver
        self._sock = sock
        self._fast = resolver.answer_fast
        self._counts = resolver.metrics.counters
        self._gate = gate
        self._loop = asyncio.get_running_loop()
        reader = self._on_readable if gate is None else self._on_readable_checked
        self._loop.add_reader(sock.fileno(), reader)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def _on_readable(self) -> None:
        recvfrom = self._sock.recvfrom
        fast = self._fast
        sendto = self._sock.sendto
        received = 0
        # A bounded batch per wake-up keeps TCP clients and timers served.
        while received < UDP_BATCH:
            try:
                data, addr = recvfrom(UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors surfacing on Linux
                log.debug("UDP receive error: %s", exc)
                continue
            received += 1
            try:
                response = fast(data, False)
                if response is not None:
                    sendto(response, addr)
                    continue
                self._resolver.answer_slow(data, False, functools.partial(self._send, addr))
            except (BlockingIOError, InterruptedError):
                self._counts["udp_send_dropped"] += 1
            except Exception:
                self._counts["internal_errors"] += 1
                log.exception("UDP packet from %s dropped", addr)
        # Counted per batch, not per packet: the hot path stays free of it.
        self._counts["udp_queries"] += received

    def _on_readable_checked(self) -> None:
        """``_on_readable`` with the gate: access per client, limits on the answers.

        A twin of ``_on_readable`` on purpose: sharing the loop would put a
        Python call per packet (~60 ns, a twentieth of a fast-path answer) on
        loopback-only listeners, which must not pay for checks they skip.
        """
        assert self._gate is not None
        recvfrom = self._sock.recvfrom
        sendto = self._sock.sendto
        peers = self._gate.peers
        peer_of = self._gate.peer
        outgoing = self._gate.limits.outgoing
        drop_denied = self._gate.drop_denied
        received = 0
        while received < UDP_BATCH:
            try:
                data, addr = recvfrom(UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("UDP receive error: %s", exc)
                continue
            received += 1
            try:
                fast, client = peers.get(addr[0]) or peer_of(addr[0])
                response = fast(data, False) if fast is not None else None
                if response is None:
                    if fast is None and drop_denied:
                        # --refuse-action drop: not even parsed (a flood from outside).
                        self._counts["access_dropped"] += 1
                        continue
                    send = functools.partial(self._send_checked, client, len(data), addr)
                    self._resolver.answer_slow(data, False, send, client.access)
                    continue
                if client.limited:
                    response = outgoing(client.block, len(data), response)
                    if response is None:
                        continue
                sendto(response, addr)
            except (BlockingIOError, InterruptedError):
                self._counts["udp_send_dropped"] += 1
            except Exception:
                self._counts["internal_errors"] += 1
                log.exception("UDP packet from %s dropped", addr)
        self._counts["udp_queries"] += received

    def _send(self, addr: tuple[Any, ...], response: bytes) -> None:
        try:
            self._sock.sendto(response, addr)
        except OSError:
            # Full socket buffer or a closed listener: the client retries.
            self._counts["udp_send_dropped"] += 1

    def _send_checked(
        self, client: Client, query_size: int, addr: tuple[Any, ...], response: bytes
    ) -> None:
        if client.limited:
            assert self._gate is not None
            limited = self._gate.limits.outgoing(client.block, query_size, response)
            if limited is None:
                return
            response = limited
        self._send(addr, response)


class TcpConnection(asyncio.Protocol):
    def __init__(self, resolver: Resolver, server: TcpServer) -> None:
        self._resolver = resolver
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._pending = 0
        self._loop = asyncio.get_running_loop()
        self._fast: FastAnswer | None = resolver.answer_fast
        self._access = Access.FULL

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self._transport = cast(asyncio.Transport, transport)
        gate = self._server.gate
        if gate is not None:
            peer = tr.get_extra_info("peername")
            self._fast, client = gate.peer(peer[0]) if peer else (None, _UNKNOWN_PEER)
            self._access = client.access
            if client.access is Access.NONE and gate.drop_denied:
                # --refuse-action drop: over TCP, no connection.
                self._resolver.metrics.counters["access_dropped"] += 1
                tr.abort()
                return
        if not self._server.admit(self):
            tr.abort()
            return
        tr.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.release(self)
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._server.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        # RFC 7766 6.2.3: close idle connections; wait while answers are owed.
        if self._pending:
            self._arm_idle()
        elif self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arm_idle()
        buf = self._buffer
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            self._handle(message)

    def _handle(self, message: bytes) -> None:
        self._resolver.metrics.counters["tcp_queries"] += 1
        try:
            fast = self._fast
            response = fast(message, True) if fast is not None else None
            if response is not None:
                self._send(response)
                return
            self._pending += 1
            self._resolver.answer_slow(message, True, self._send_pending, self._access)
        except Exception:
            self._resolver.metrics.counters["internal_errors"] += 1
            log.exception("TCP message dropped")

    def _send_pending(self, response: bytes) -> None:
        self._pending -= 1
        self._send(response)

    def _send(self, response: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(struct.pack("!H", len(response)) + response)


class TcpServer:
    """Tracks connections for the limit; the oldest idle ones could be shed later."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        idle_timeout: float,
        max_connections: int,
        gate: Gate | None = None,
    ) -> None:
        self._resolver = resolver
        self.gate = gate
        self.idle_timeout = idle_timeout
        self._max = max_connections
        self._connections: set[TcpConnection] = set()

    def protocol(self) -> TcpConnection:
        return TcpConnection(self._resolver, self)

    def admit(self, conn: TcpConnection) -> bool:
        if len(self._connections) >= self._max:
            self._resolver.metrics.counters["tcp_refused"] += 1
            return False
        self._connections.add(conn)
        return True

    def release(self, conn: TcpConnection) -> None:
        self._connections.discard(conn)

    @property
    def connections(self) -> int:
        return len(self._connections)


async def open_listeners(
    resolver: Resolver,
    host: str,
    port: int,
    *,
    tcp: TcpServer,
    reuse_port: bool,
    gate: Gate | None = None,
) -> tuple[UdpListener, asyncio.Server]:
    """UDP and TCP on one address; both or neither.

    ``gate``: access control and UDP limits for this address's UDP clients
    (None: no checks, for a loopback-only listener).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SOCKET_BUFFER)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    udp = UdpListener(resolver, sock, gate)
    try:
        server = await loop.create_server(
            tcp.protocol,
            host,
            sock.getsockname()[1],
            family=family,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
    except Exception:
        udp.close()
        raise
    return udp, server
