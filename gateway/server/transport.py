"""UDP and TCP listeners: framing, limits and timeouts; no DNS decisions.

Both hand each message to the resolver's fast path first and fall back to
the slow path with a reply function. Any exception is caught here and
counted: a packet can never take the server down, and nothing a client
sends logs more than a few lines a minute (``gateway.ratelog``).

Access control and UDP limits (``gateway.server.access``,
``gateway.server.ratelimit``) are applied through a :class:`Gate`, which
caches the decision per client address. A UDP listener that hears only
loopback clients gets no gate and runs the loop without any check; other
UDP listeners pay one dict lookup per packet (plus the limits for clients
that have them). TCP decides once per connection, when it is accepted.

TCP follows RFC 7766: two-byte length framing, several queries per
connection (pipelined; answers may come back out of order, 6.2.1.1), an
idle timeout. Against clients that hold resources (issue 9), the decisions
live in ``tcp_limits`` and are applied here: a cap on connections in all
and per client address (at the cap the oldest idle connection makes room),
a deadline for each whole message, a cap on unanswered queries and on
queued reply bytes per connection (past either the connection is not read
until replies drain), a cap on queued reply bytes across all connections
(the worst reader is closed), and an accept loop that survives running out
of file descriptors by closing idle connections.

Sockets are bound apart from the listeners (:func:`bind_pair`, or passed
by systemd) so the process can drop root before any is read. A reload
hands every listener a new resolver and gate between two reader callbacks
(``use``; TCP connections take them at their next message); a shutdown
stops reading UDP, closes the listening sockets and lets each TCP
connection answer what it received, then close (``TcpServer.drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

from gateway.dns.fastpath import FastAnswer
from gateway.ratelog import RateLimitedLog
from gateway.server import batchio
from gateway.server.access import Access, AccessPolicy, Client
from gateway.server.querylog import QueryLog, SlowAnswer
from gateway.server.ratelimit import UdpLimits
from gateway.server.resolver import Resolver
from gateway.server.tcp_limits import Admission, ConnectionTable, Framer, TcpLimits

log = logging.getLogger(__name__)

# Replies stay queued for at most this many bytes per TCP client before we
# stop reading from it (a client that never reads cannot exhaust memory).
TCP_WRITE_HIGH_WATER = 256 * 1024
# Messages of one TCP connection handled per loop turn: the rest of a large
# read waits for the next turn, so one pipelining client cannot hold the
# loop, and the UDP clients behind it, for a whole 256 KiB read.
TCP_BATCH = 64
# Datagrams handled per reader wake-up, and the largest one read.
UDP_BATCH = 64
UDP_RECV_SIZE = 65535
# Room for bursts while the loop is busy (the kernel caps it at rmem_max).
UDP_SOCKET_BUFFER = 4 * 1024 * 1024
# Connections accepted per wake-up of the listening socket, and its backlog.
ACCEPT_BATCH = 64
TCP_BACKLOG = 1024
# Out of file descriptors: idle connections closed per attempt, and the
# pause before accepting again when none could be closed (no busy loop).
SHED_ON_EMFILE = 16
ACCEPT_RETRY_S = 0.1
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Client decisions cached per address, about 230 bytes each (tracemalloc),
# in each of two caches (by host string; by raw address bytes for the
# batched reader): at most ~8 MB. A cache starts over when full, so a flood
# of forged sources costs one classification (a few us) per packet, never memory.
MAX_CACHED_PEERS = 16384
# A peer: the fast path it may use (None: none, slow path decides), its
# decision, and its slow path (the resolver's, or the query log's wrapper).
Peer = tuple[FastAnswer | None, Client, SlowAnswer]


class Gate:
    """Per-client decisions for the listeners that need them.

    ``peers`` (by host) and ``raw_peers`` (by the host bytes of a raw socket
    address, ``batchio.HOST_KEY``) are read directly by the UDP loops (one
    dict lookup per packet); :meth:`peer` and :meth:`peer_of_raw` fill them.
    """

    def __init__(
        self,
        resolver: Resolver,
        policy: AccessPolicy,
        limits: UdpLimits,
        *,
        drop_denied: bool,
        querylog: QueryLog | None = None,
    ) -> None:
        """``querylog`` (--log-queries): every peer gets logging answer functions;
        every listener must then have the gate (``app``)."""
        self.policy = policy
        self.querylog = querylog
        self._slow: SlowAnswer = resolver.answer_slow
        self.limits = limits
        self.peers: dict[str, Peer] = {}
        self.raw_peers: dict[bytes, Peer] = {}
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
        fast, slow = self._fast[client.access], self._slow
        if self.querylog is not None:
            fast, slow = self.querylog.fast_for(host, fast), self.querylog.slow_for(host)
        peer = self.peers[host] = (fast, client, slow)
        return peer

    def peer_of_raw(self, key: bytes, raw: bytes) -> Peer:
        """:meth:`peer` for the raw address ``raw``; ``key`` is its host part."""
        host = batchio.decode(raw)[0]
        peer = self.peers.get(host) or self.peer(host)
        if len(self.raw_peers) >= MAX_CACHED_PEERS:
            self.raw_peers.clear()
        self.raw_peers[key] = peer
        return peer


class UdpListener:
    """A UDP socket read straight from the event loop's reader callback.

    No asyncio protocol/transport pair: measured on the 2-core machines,
    recvfrom/sendto on the socket from an ``add_reader`` callback answers
    ~15% more queries per second than uvloop's datagram transport, whose
    per-datagram bookkeeping dominated the profile of the fast path.

    With ``batch`` (the compiled helper, ``batchio``) a wake-up reads up to
    UDP_BATCH datagrams in one ``recvmmsg`` and sends their fast-path
    answers in one ``sendmmsg``; senders stay raw addresses. Without it, the
    same bounded batch is read one ``recvfrom`` at a time.
    """

    def __init__(
        self,
        resolver: Resolver,
        sock: socket.socket,
        gate: Gate | None = None,
        batch: batchio.BatchIO | None = None,
    ) -> None:
        self._resolver = resolver
        self._sock = sock
        self._fd = sock.fileno()
        self._fast = resolver.answer_fast
        self._counts = resolver.metrics.counters
        self._log = RateLimitedLog(log, counts=self._counts)
        self._gate = gate
        self._batch = batch
        # Slow-path replies waiting for the next loop turn's sendmmsg (batched path).
        self._queued_replies: list[bytes | None] = []
        self._queued_to: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._reading = False
        if batch is not None:
            assert UDP_BATCH <= batch.MAX_BATCH
            self._host_key = batchio.HOST_KEY[sock.family]
        self._read()

    def _read(self) -> None:
        reader: Callable[[], None]
        if self._batch is None:
            reader = self._on_readable if self._gate is None else self._on_readable_checked
        else:
            reader = self._on_batch if self._gate is None else self._on_batch_checked
        self._loop.add_reader(self._fd, reader)
        self._reading = True

    def use(self, resolver: Resolver, gate: Gate | None) -> None:
        """Answers with ``resolver`` (and ``gate``) from the next datagram on: a reload.

        Between two reader callbacks, so no datagram is lost: those not yet
        read wait in the socket. Replies still owed go out as before.
        """
        self._resolver = resolver
        self._fast = resolver.answer_fast
        self._gate = gate
        if self._reading:
            self._read()  # add_reader replaces the callback: checked or not

    def pause(self) -> None:
        """Stops reading (shutdown); the socket stays open for the replies still owed."""
        if self._reading and self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._flush()
            self.pause()
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
                self._log.log(logging.DEBUG, "udp_receive", "UDP receive error: %s", exc)
                continue
            received += 1
            try:
                response = fast(data, False)
                if response is not None:
                    sendto(response, addr)
                    continue
                if not addr[1]:
                    # Source port 0 (forged): no reply can reach it, so the
                    # slow path (maybe an upstream query) is not worth running.
                    self._counts["udp_dropped_port_zero"] += 1
                    continue
                self._resolver.answer_slow(data, False, functools.partial(self._send, addr))
            except (BlockingIOError, InterruptedError):
                self._counts["udp_send_dropped"] += 1
            except OSError as exc:
                # Checked here, not before the fast path: no cost per answer.
                self._send_failed(addr, exc)
            except Exception as exc:
                self._counts["internal_errors"] += 1
                self._log.error("udp_bug", "UDP packet from %s dropped", addr, exc_info=exc)
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
                self._log.log(logging.DEBUG, "udp_receive", "UDP receive error: %s", exc)
                continue
            received += 1
            try:
                fast, client, slow = peers.get(addr[0]) or peer_of(addr[0])
                response = fast(data, False) if fast is not None else None
                if response is None:
                    if fast is None and drop_denied:
                        # --refuse-action drop: not even parsed (a flood from outside).
                        self._counts["access_dropped"] += 1
                        continue
                    if not addr[1]:
                        self._counts["udp_dropped_port_zero"] += 1  # see _on_readable
                        continue
                    send = functools.partial(
                        self._send_limited, client, len(data), functools.partial(self._send, addr)
                    )
                    slow(data, False, send, client.access)
                    continue
                if client.limited:
                    response = outgoing(client.block, len(data), response)
                    if response is None:
                        continue
                sendto(response, addr)
            except (BlockingIOError, InterruptedError):
                self._counts["udp_send_dropped"] += 1
            except OSError as exc:
                self._send_failed(addr, exc)
            except Exception as exc:
                self._counts["internal_errors"] += 1
                self._log.error("udp_bug", "UDP packet from %s dropped", addr, exc_info=exc)
        self._counts["udp_queries"] += received

    def _on_batch(self) -> None:
        """``_on_readable`` with the compiled helper: one recvmmsg, one sendmmsg."""
        assert self._batch is not None
        batch = self._batch
        fd = self._fd
        try:
            datagrams, addresses = batch.recv(fd, UDP_BATCH)
        except OSError as exc:  # e.g. ICMP errors surfacing on Linux
            self._log.log(logging.DEBUG, "udp_receive", "UDP receive error: %s", exc)
            return  # still readable: the loop calls again on its next turn
        if not datagrams:
            return
        fast = self._fast
        dropped: set[int] | None = None
        try:
            # A comprehension: the cheapest per-datagram loop CPython has.
            replies = [fast(data, False) for data in datagrams]
        except Exception:
            replies, dropped = self._answer_each(datagrams, addresses)
        slow, failures = batch.send(fd, replies, addresses)
        if failures is not None:
            self._batch_failed(failures, addresses)
        if slow:
            for i, reply in enumerate(replies):
                if reply is None and (dropped is None or i not in dropped):
                    self._slow_raw(datagrams[i], addresses[i], None)
        counts = self._counts
        counts["udp_queries"] += len(datagrams)
        counts["udp_batches"] += 1

    def _answer_each(
        self, datagrams: list[bytes], addresses: list[bytes]
    ) -> tuple[list[bytes | None], set[int]]:
        """The fast path per datagram, a bug in it costing only that datagram.

        Returns the replies and the indexes of the datagrams dropped that way.
        """
        replies: list[bytes | None] = []
        dropped: set[int] = set()
        for i, data in enumerate(datagrams):
            try:
                replies.append(self._fast(data, False))
            except Exception as exc:
                replies.append(None)
                dropped.add(i)
                self._counts["internal_errors"] += 1
                self._log.error(
                    "udp_bug",
                    "UDP packet from %s dropped",
                    batchio.decode(addresses[i]),
                    exc_info=exc,
                )
        return replies, dropped

    def _on_batch_checked(self) -> None:
        """``_on_batch`` with the gate, as ``_on_readable_checked`` is to ``_on_readable``."""
        assert self._batch is not None and self._gate is not None
        batch = self._batch
        fd = self._fd
        try:
            datagrams, addresses = batch.recv(fd, UDP_BATCH)
        except OSError as exc:
            self._log.log(logging.DEBUG, "udp_receive", "UDP receive error: %s", exc)
            return
        if not datagrams:
            return
        peers = self._gate.raw_peers
        peer_of = self._gate.peer_of_raw
        outgoing = self._gate.limits.outgoing
        drop_denied = self._gate.drop_denied
        host_key = self._host_key
        replies: list[bytes | None] = []
        reply = replies.append
        slow: list[tuple[int, Client, SlowAnswer]] = []
        for i, data in enumerate(datagrams):
            raw = addresses[i]
            try:
                key = raw[host_key]
                fast, client, answer_slow = peers.get(key) or peer_of(key, raw)
                response = fast(data, False) if fast is not None else None
                if response is None:
                    reply(None)
                    if fast is None and drop_denied:
                        self._counts["access_dropped"] += 1
                    else:
                        slow.append((i, client, answer_slow))
                    continue
                if client.limited:
                    response = outgoing(client.block, len(data), response)
                reply(response)
            except Exception as exc:
                reply(None)
                self._counts["internal_errors"] += 1
                self._log.error(
                    "udp_bug", "UDP packet from %s dropped", batchio.decode(raw), exc_info=exc
                )
        _, failures = batch.send(fd, replies, addresses)
        if failures is not None:
            self._batch_failed(failures, addresses)
        for i, client, answer_slow in slow:
            self._slow_raw(datagrams[i], addresses[i], client, answer_slow)
        counts = self._counts
        counts["udp_queries"] += len(datagrams)
        counts["udp_batches"] += 1

    def _slow_raw(
        self,
        data: bytes,
        raw: bytes,
        client: Client | None,
        answer_slow: SlowAnswer | None = None,
    ) -> None:
        """Hands a datagram of a batch to the slow path (the peer's, with a gate);
        its reply goes to ``raw``."""
        if batchio.port_is_zero(raw):
            self._counts["udp_dropped_port_zero"] += 1  # see _on_readable
            return
        try:
            send = functools.partial(self._send_raw, raw)
            if client is None:
                self._resolver.answer_slow(data, False, send)
            else:
                assert answer_slow is not None
                checked = functools.partial(self._send_limited, client, len(data), send)
                answer_slow(data, False, checked, client.access)
        except Exception as exc:
            self._counts["internal_errors"] += 1
            self._log.error(
                "udp_bug", "UDP packet from %s dropped", batchio.decode(raw), exc_info=exc
            )

    def _send_raw(self, raw: bytes, response: bytes) -> None:
        """Queues a slow-path reply; the queue goes out in one sendmmsg on the next
        loop turn (forwarded answers arrive many per wake-up of the forwarder)."""
        if self._fd != self._sock.fileno():
            return  # closed meanwhile (a forwarded answer arriving after shutdown)
        replies = self._queued_replies
        if not replies:
            self._loop.call_soon(self._flush)
        replies.append(response)
        self._queued_to.append(raw)

    def _flush(self) -> None:
        replies, addresses = self._queued_replies, self._queued_to
        if not replies:
            return
        self._queued_replies, self._queued_to = [], []
        if self._batch is None or self._fd != self._sock.fileno():
            return
        _, failures = self._batch.send(self._fd, replies, addresses)
        if failures is not None:
            self._batch_failed(failures, addresses)

    def _batch_failed(self, failures: list[tuple[int, int]], addresses: list[bytes]) -> None:
        for i, err in failures:
            if err in batchio.NOT_NOW:
                self._counts["udp_send_dropped"] += 1  # full socket buffer: the client retries
            else:
                self._send_failed(batchio.decode(addresses[i]), OSError(err, os.strerror(err)))

    def _send(self, addr: tuple[Any, ...], response: bytes) -> None:
        try:
            self._sock.sendto(response, addr)
        except (BlockingIOError, InterruptedError):
            # Full socket buffer: the client retries.
            self._counts["udp_send_dropped"] += 1
        except OSError as exc:
            self._send_failed(addr, exc)

    def _send_failed(self, addr: tuple[Any, ...], exc: OSError) -> None:
        """A reply the kernel refused: an unanswerable (forged) source address."""
        if not addr[1]:
            self._counts["udp_dropped_port_zero"] += 1
            return
        self._counts["udp_send_errors"] += 1
        self._log.warning("udp_send", "UDP reply to %s not sent: %s", addr, exc)

    def _send_limited(
        self, client: Client, query_size: int, send: Callable[[bytes], None], response: bytes
    ) -> None:
        """A slow-path reply of a checked listener: through the client's limits, then sent."""
        if client.limited:
            assert self._gate is not None
            limited = self._gate.limits.outgoing(client.block, query_size, response)
            if limited is None:
                return
            response = limited
        send(response)


class TcpConnection(asyncio.Protocol):
    """One client connection: reads while it may, answers, applies the limits.

    Reading stops (``pause_reading``) while a whole message is buffered and
    not yet handled: the client's own backlog stays in the kernel, where it
    costs us nothing, until its replies drain.
    """

    def __init__(
        self,
        server: TcpServer,
        client: str,
        fast: FastAnswer | None,
        access: Access,
        slow: SlowAnswer,
    ) -> None:
        """``fast``, ``access``, ``slow``: what the gate decided for ``client`` (``Gate.peer``)."""
        self.client = client
        self.pending = 0  # slow-path replies still owed
        self._fast = fast
        self._slow = slow
        self._access = access
        self._server = server
        self._generation = server.generation
        self._limits = server.limits
        self._resolver = server.resolver
        self._counts = server.resolver.metrics.counters
        self._framer = Framer()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._last_read = self._loop.time()
        self._idle: asyncio.TimerHandle | None = None
        self._queued_at_idle = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = True
        self._writing_paused = False
        self._processing = False
        self._continued = False  # a next turn of _process is scheduled
        self._shed = False  # closed by us before its transport existed
        self._finishing = False  # shutdown: no more reading; close once answered

    # -- what the connection table asks (tcp_limits.Tracked) --------------

    @property
    def idle(self) -> bool:
        tr = self._transport
        return (
            tr is not None
            and not tr.is_closing()
            and self.pending == 0
            and tr.get_write_buffer_size() == 0
        )

    def queued_now(self) -> int:
        tr = self._transport
        return tr.get_write_buffer_size() if tr is not None else 0

    def abort(self) -> None:
        """Closes now, dropping anything queued (limits, shedding)."""
        self._shed = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self._transport = cast(asyncio.Transport, transport)
        if self._shed:
            tr.abort()
            return
        tr.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER)
        self._idle = self._loop.call_later(self._limits.idle_timeout, self._on_idle)
        if self._server.draining:
            self.finish()

    def finish(self) -> None:
        """Shutdown: read no more, answer what has arrived whole, then close.

        ``close`` sends what is queued, then FIN (RFC 7766 6.2.3: the
        server closes when it is done). A begun message that is not
        complete is dropped with the connection.
        """
        self._finishing = True
        if self._transport is not None:
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.release(self)
        for timer in (self._idle, self._deadline):
            if timer is not None:
                timer.cancel()
        self._transport = None

    def pause_writing(self) -> None:
        self._writing_paused = True  # _process stops and pauses reading

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._server.note_queued(self)
        self._process()

    def data_received(self, data: bytes) -> None:
        self._framer.feed(data)
        self._last_read = self._loop.time()
        self._process()

    # -- timers ------------------------------------------------------------

    def _on_idle(self) -> None:
        # RFC 7766 6.2.3: close idle connections; wait while answers are owed.
        tr = self._transport
        if tr is None:
            return
        left = self._last_read + self._limits.idle_timeout - self._loop.time()
        queued = tr.get_write_buffer_size()
        # A client still reading a long reply slowly is not idle either.
        draining = queued and queued != self._queued_at_idle
        self._queued_at_idle = queued
        if left > 0 or self.pending or draining:
            delay = left if left > 0 else self._limits.idle_timeout
            self._idle = self._loop.call_later(delay, self._on_idle)
        elif queued:
            tr.abort()  # replies it has not read for the whole idle time
        else:
            tr.close()

    def _on_deadline(self) -> None:
        self._deadline = None
        self._counts["tcp_message_timeouts"] += 1
        self.abort()

    # -- messages ----------------------------------------------------------

    @property
    def _blocked(self) -> bool:
        return self._writing_paused or self.pending >= self._limits.max_pipelined

    def _process(self) -> None:
        """Handles buffered messages while allowed, then sets reading and the deadline."""
        self._continued = False
        tr = self._transport
        if tr is None or tr.is_closing() or self._processing:
            return
        framer = self._framer
        self._processing = True
        try:
            handled = 0
            while framer.ready and not self._blocked:
                if handled == TCP_BATCH:
                    self._continued = True
                    self._loop.call_soon(self._process)
                    break
                message = framer.pop()
                assert message is not None
                self._server.touch(self)
                self._handle(message)
                handled += 1
                if tr.is_closing():
                    return
            if handled and self._deadline is not None:
                self._deadline.cancel()  # that message is complete; a new one starts anew
                self._deadline = None
        finally:
            self._processing = False
        self._set_flow(tr)

    def _set_flow(self, tr: asyncio.Transport) -> None:
        if self._finishing and not self.pending and not self._framer.ready:
            tr.close()  # every reply is written: the transport flushes, then FIN
            return
        # Read only when everything buffered is handled and replies may be sent.
        reading = not self._finishing and not self._blocked and not self._framer.ready
        if reading != self._reading:
            self._reading = reading
            if reading:
                tr.resume_reading()
            else:
                self._counts["tcp_read_pauses"] += 1
                tr.pause_reading()
        # The deadline runs while a begun message waits for its rest and we
        # are reading it; a pause is ours, so it starts anew afterwards.
        if reading and self._framer.waiting:
            if self._deadline is None:
                self._deadline = self._loop.call_later(
                    self._limits.message_timeout, self._on_deadline
                )
        elif self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handle(self, message: bytes) -> None:
        self._counts["tcp_queries"] += 1
        if self._generation != self._server.generation:
            # A reload: this connection answers with the new resolver and access rules.
            self._generation = self._server.generation
            self._resolver = self._server.resolver
            self._fast, self._access, self._slow = self._server.decide(self.client)
        try:
            fast = self._fast
            response = fast(message, True) if fast is not None else None
            if response is not None:
                self._send(response)
                return
            self.pending += 1
            coming = False
            try:
                coming = self._slow(message, True, self._send_pending, self._access)
            finally:
                if not coming:
                    self.pending -= 1  # dropped (a response, a short message, denied): no reply
        except Exception as exc:
            self._counts["internal_errors"] += 1
            self._server.log.error("tcp_bug", "TCP message dropped", exc_info=exc)

    def _send_pending(self, response: bytes) -> None:
        self.pending -= 1
        self._send(response)
        # Called later (forwarding) or from inside _handle; the latter is
        # picked up by the running _process.
        if not self._processing and not self._continued:
            self._process()

    def _send(self, response: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(struct.pack("!H", len(response)) + response)
            self._server.note_queued(self)


class TcpServer:
    """The TCP side of every listener: limits, the connection table, accepting."""

    def __init__(self, resolver: Resolver, limits: TcpLimits, *, gate: Gate | None = None) -> None:
        """``gate``: access control for every TCP client (None: everyone may ask everything)."""
        self.resolver = resolver
        self.limits = limits
        self.gate = gate
        self._counts = resolver.metrics.counters
        self.log = RateLimitedLog(log, counts=self._counts)
        self._table: ConnectionTable[TcpConnection] = ConnectionTable(
            max_connections=limits.max_connections,
            max_per_client=limits.max_per_client,
            max_queued_bytes=limits.max_queued_bytes,
        )
        self._connecting: set[asyncio.Task[None]] = set()
        # Bumped by use(): connections pick up the new resolver at their next message.
        self.generation = 0
        self.draining = False
        self._all_closed: asyncio.Event | None = None

    def use(self, resolver: Resolver, limits: TcpLimits, gate: Gate | None) -> None:
        """New connections (and old ones, from their next message) use these: a reload."""
        self.resolver = resolver
        self.limits = limits
        self.gate = gate
        self._table.resize(
            max_connections=limits.max_connections,
            max_per_client=limits.max_per_client,
            max_queued_bytes=limits.max_queued_bytes,
        )
        self.generation += 1

    def decide(self, client: str) -> tuple[FastAnswer | None, Access, SlowAnswer]:
        """The fast path ``client`` may use, what it may be answered, and its slow path
        (the query log's wrapper with --log-queries): the gate's call."""
        if self.gate is None:
            return self.resolver.answer_fast, Access.FULL, self.resolver.answer_slow
        fast, peer, slow = self.gate.peer(client)
        return fast, peer.access, slow

    def drain(self) -> None:
        """Shutdown: every connection answers what it has, then closes (see ``finish``)."""
        self.draining = True
        for conn in self._table.members():
            conn.finish()

    async def wait_closed(self, timeout: float) -> int:
        """Waits up to ``timeout`` for every connection to close; aborts the rest, how many."""
        if len(self._table):
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._all_closed.wait()
        left = self._table.members()
        for conn in left:
            conn.abort()
        return len(left)

    @property
    def connections(self) -> int:
        return len(self._table)

    @property
    def queued_bytes(self) -> int:
        return self._table.queued_total

    def accept(self, sock: socket.socket, client: str) -> None:
        """A new connection from ``client``: refused, or admitted (shedding first).

        The gate decides first, so a client that is dropped outside --allow
        takes no connection slot and sheds no one's idle connection.
        """
        fast, access, slow = self.decide(client)
        if self.gate is not None and access is Access.NONE and self.gate.drop_denied:
            # --refuse-action drop: over TCP, no connection.
            self._counts["access_dropped"] += 1
            sock.close()
            return
        verdict: Admission[TcpConnection] = self._table.admit(client)
        if verdict.refused is not None:
            self._counts[verdict.refused] += 1
            sock.close()
            return
        self._close(verdict.shed, "tcp_shed_idle")
        conn = TcpConnection(self, client, fast, access, slow)
        self._table.add(conn)
        task = asyncio.get_running_loop().create_task(self._connect(conn, sock))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: TcpConnection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: conn, sock)
        except Exception as exc:  # e.g. the client reset it meanwhile
            self.release(conn)
            sock.close()
            self.log.warning("tcp_connect", "TCP connection from %s dropped: %s", conn.client, exc)

    def shed_idle(self, count: int) -> int:
        """Closes up to ``count`` of the oldest idle connections; how many."""
        victims = self._table.oldest_idle(count)
        self._close(victims, "tcp_shed_idle")
        return len(victims)

    def release(self, conn: TcpConnection) -> None:
        self._table.release(conn)
        if self._all_closed is not None and not len(self._table):
            self._all_closed.set()

    def touch(self, conn: TcpConnection) -> None:
        self._table.touch(conn)

    def note_queued(self, conn: TcpConnection) -> None:
        """``conn``'s write buffer changed; over the total cap, the worst readers go."""
        self._close(self._table.note_queued(conn, conn.queued_now()), "tcp_closed_queued")

    def _close(self, victims: tuple[TcpConnection, ...], counter: str) -> None:
        for victim in victims:
            self.release(victim)
            self._counts[counter] += 1
            victim.abort()

    def close(self) -> None:
        for task in self._connecting:
            task.cancel()


class TcpListener:
    """Accepts on one listening socket from a reader callback.

    Not ``loop.create_server``: its accept loop cannot be told what to do
    when descriptors run out (libuv accepts and drops the waiting clients,
    and an error there closes the server for good). Here EMFILE/ENFILE close
    the oldest idle connections and accepting resumes on the next loop turn,
    or after ``ACCEPT_RETRY_S`` when none could be closed; the per-client
    check happens before a transport is built.
    """

    def __init__(self, server: TcpServer, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._counts = server.resolver.metrics.counters
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._server.accept(sock, addr[0])

    def _accept_failed(self, exc: OSError) -> None:
        self._counts["tcp_accept_errors"] += 1
        shed = 0
        if exc.errno in _OUT_OF_DESCRIPTORS:
            shed = self._server.shed_idle(SHED_ON_EMFILE)
        self._server.log.warning(
            "tcp_accept", "TCP accept failed (%s); closed %d idle connections", exc, shed
        )
        # Aborted connections give their descriptors back at once: try again
        # on the next turn. With none closed, wait rather than spin.
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(0 if shed else ACCEPT_RETRY_S, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)


def _bound_socket(family: int, kind: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SOCKET_BUFFER)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(TCP_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_pair(host: str, port: int, *, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets bound to one address (TCP listening); both or neither.

    Only bound: listeners read them once made (after ``--user`` dropped
    root, so no query is ever answered as root). Port 0 takes the UDP
    socket's port for TCP too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp_sock = _bound_socket(family, socket.SOCK_DGRAM, host, port, reuse_port)
    try:
        tcp_sock = _bound_socket(
            family, socket.SOCK_STREAM, host, udp_sock.getsockname()[1], reuse_port
        )
    except Exception:
        udp_sock.close()
        raise
    return udp_sock, tcp_sock


def tune_udp(sock: socket.socket) -> None:
    """The buffer sizes of our own UDP sockets, for one passed in (socket activation)."""
    with contextlib.suppress(OSError):  # a smaller buffer is a loss under bursts, no error
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SOCKET_BUFFER)
