"""Forwarding to upstream resolvers: UDP first, TCP when truncated.

Callback-driven rather than a task per query: a miss costs one sendto, a
dict entry and a timer. Identical questions in flight share one upstream
query. Anti-spoofing (RFC 5452): random 16-bit IDs, a pool of sockets on
kernel-chosen random ports that is renewed as it is used, and a reply
counts only if it comes from the upstream's address and port, has our ID,
QR set and our question; anything else is ignored and the query keeps
waiting.

Failover: each attempt waits ``timeout``; a timeout, SERVFAIL, REFUSED,
NOTIMP or FORMERR moves on to the next upstream, round the list, until
``deadline`` is spent; then the waiters get None (the resolver answers
stale or SERVFAIL). Upstreams that fail move to the back of the order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.dns import wire
from gateway.options import Endpoint

log = logging.getLogger(__name__)

SOCKET_POOL_SIZE = 8
# A pool socket is replaced after this many queries so source ports keep moving.
QUERIES_PER_SOCKET = 2000
UPSTREAM_PAYLOAD = 1232
SEND_ERROR_PAUSE_S = 0.05
# Random bytes fetched from the OS at a time (two per query ID).
ENTROPY_BLOCK = 4096
_RETRY_RCODES = frozenset({wire.SERVFAIL, wire.REFUSED, wire.NOTIMP, wire.FORMERR})

Done = Callable[[bytes | None], None]


@dataclass(slots=True)
class _Pending:
    question: bytes  # lower-case qname wire + qtype + qclass
    do: bool
    waiters: list[Done]
    started: float
    upstream: int = 0
    msg_id: int = 0
    slot: int = -1
    timer: asyncio.TimerHandle | None = None
    tcp: asyncio.Task[None] | None = None
    tried: list[int] = field(default_factory=list)


class _PoolSocket:
    __slots__ = ("family", "sock", "uses")

    def __init__(self, family: int) -> None:
        self.family = family
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self.uses = 0


class Forwarder:
    """Sends questions upstream; calls back with the raw response or None."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstreams: tuple[Endpoint, ...],
        *,
        timeout: float,
        deadline: float,
        max_inflight: int,
        rng: random.Random | None = None,
    ) -> None:
        self._loop = loop
        self._upstreams = [(u.host, u.port) for u in upstreams]
        self._families = [socket.AF_INET6 if ":" in u.host else socket.AF_INET for u in upstreams]
        self._order = list(range(len(upstreams)))
        self._timeout = timeout
        self._deadline = deadline
        self._max_inflight = max_inflight
        # Query IDs and socket choice must be unpredictable (RFC 5452): from
        # the OS's CSPRNG, fetched in blocks because one getrandom() call per
        # query was 7% of the time spent on a cache miss (py-spy).
        self._random_bytes = rng.randbytes if rng is not None else os.urandom
        self._entropy = b""
        self._entropy_at = 0
        self._by_question: dict[tuple[bytes, bool], _Pending] = {}
        self._by_id: dict[tuple[int, int], _Pending] = {}
        self._pools: dict[int, list[_PoolSocket | None]] = {}
        self.stats = {"sent": 0, "timeouts": 0, "spoofed": 0, "tcp": 0, "failed": 0, "overload": 0}

    @property
    def inflight(self) -> int:
        return len(self._by_question)

    def close(self) -> None:
        for pending in list(self._by_question.values()):
            self._finish(pending, None)
        for pool in self._pools.values():
            for ps in pool:
                if ps is not None:
                    self._loop.remove_reader(ps.sock.fileno())
                    ps.sock.close()
        self._pools.clear()

    def resolve(self, question: bytes, do: bool, done: Done) -> None:
        """Forwards ``question``; ``done`` gets the upstream response or None."""
        key = (question, do)
        pending = self._by_question.get(key)
        if pending is not None:
            pending.waiters.append(done)
            return
        if not self._upstreams or len(self._by_question) >= self._max_inflight:
            self.stats["overload" if self._upstreams else "failed"] += 1
            done(None)
            return
        pending = _Pending(question, do, [done], self._loop.time())
        self._by_question[key] = pending
        self._attempt(pending)

    def _attempt(self, pending: _Pending) -> None:
        elapsed = self._loop.time() - pending.started
        if elapsed >= self._deadline:
            self._finish(pending, None)
            return
        # The best-ranked upstream not yet tried in this round; then round again.
        untried = [i for i in self._order if i not in pending.tried]
        if not untried:
            pending.tried.clear()
            untried = self._order
        pending.upstream = untried[0]
        pending.tried.append(pending.upstream)
        try:
            self._send_udp(pending)
        except OSError as exc:
            log.debug("upstream %s: send failed: %s", self._upstreams[pending.upstream], exc)
            self._demote(pending.upstream)
            # A short pause, so an unreachable network cannot spin the loop.
            pending.timer = self._loop.call_later(SEND_ERROR_PAUSE_S, self._attempt, pending)
            return
        wait = min(self._timeout, self._deadline - elapsed)
        pending.timer = self._loop.call_later(wait, self._on_timeout, pending)

    def _send_udp(self, pending: _Pending) -> None:
        family = self._families[pending.upstream]
        pool = self._pools.get(family)
        if pool is None:
            pool = self._pools[family] = [None] * SOCKET_POOL_SIZE
        slot = self._random16() % SOCKET_POOL_SIZE
        ps = pool[slot]
        if ps is None or ps.uses >= QUERIES_PER_SOCKET:
            if ps is not None:
                self._retire(ps)
            ps = _PoolSocket(family)
            pool[slot] = ps
            self._loop.add_reader(ps.sock.fileno(), self._on_readable, ps)
        ps.uses += 1
        while True:
            msg_id = self._random16()
            if (ps.sock.fileno(), msg_id) not in self._by_id:
                break
        self._unlink(pending)
        pending.msg_id = msg_id
        pending.slot = ps.sock.fileno()
        self._by_id[(pending.slot, msg_id)] = pending
        ps.sock.sendto(self._packet(pending), self._upstreams[pending.upstream])
        self.stats["sent"] += 1

    def _random16(self) -> int:
        at = self._entropy_at
        if at + 2 > len(self._entropy):
            self._entropy = self._random_bytes(ENTROPY_BLOCK)
            at = 0
        self._entropy_at = at + 2
        return (self._entropy[at] << 8) | self._entropy[at + 1]

    def _packet(self, pending: _Pending) -> bytes:
        # RD set: upstreams are recursive resolvers or authoritative servers
        # (which ignore it). EDNS always, so answers up to 1232 bytes come
        # over UDP; DO as the client asked.
        opt = wire.opt_record(UPSTREAM_PAYLOAD, pending.do)
        return wire.header(pending.msg_id, wire.FLAG_RD, 1, 0, 0, 1) + pending.question + opt

    def _retire(self, ps: _PoolSocket) -> None:
        # Replies to queries still in flight on it may arrive until the deadline.
        def close() -> None:
            self._loop.remove_reader(ps.sock.fileno())
            ps.sock.close()

        self._loop.call_later(self._deadline + 0.5, close)

    def _unlink(self, pending: _Pending) -> None:
        if pending.slot >= 0:
            self._by_id.pop((pending.slot, pending.msg_id), None)
            pending.slot = -1

    def _on_readable(self, ps: _PoolSocket) -> None:
        while True:
            try:
                data, addr = ps.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable surfaces here as ECONNREFUSED; the
                # timer moves the query on.
                return
            self._on_datagram(ps.sock.fileno(), data, addr)

    def _on_datagram(self, slot: int, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < wire.HEADER_LEN:
            return
        msg_id = (data[0] << 8) | data[1]
        pending = self._by_id.get((slot, msg_id))
        if pending is None:
            self.stats["spoofed"] += 1
            return
        upstream = self._upstreams[pending.upstream]
        if (addr[0], addr[1]) != upstream and not _same_host(addr, upstream):
            self.stats["spoofed"] += 1
            return
        qlen = len(pending.question)
        if (
            not data[2] & 0x80
            or data[4:6] != b"\x00\x01"
            or data[wire.HEADER_LEN : wire.HEADER_LEN + qlen].lower() != pending.question
        ):
            self.stats["spoofed"] += 1
            return
        self._unlink(pending)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        rcode = data[3] & 0xF
        if rcode in _RETRY_RCODES:
            self._demote(pending.upstream)
            if len(pending.tried) >= len(self._upstreams):
                # Every upstream has answered this round with an error: relay
                # the last one rather than asking again in a tight loop.
                self._finish(pending, data)
                return
            self._attempt(pending)
            return
        if data[2] & 0x02:  # TC: the whole answer over TCP, same upstream.
            self.stats["tcp"] += 1
            pending.tcp = self._loop.create_task(self._over_tcp(pending))
            return
        self._finish(pending, data)

    async def _over_tcp(self, pending: _Pending) -> None:
        host, port = self._upstreams[pending.upstream]
        remaining = self._deadline - (self._loop.time() - pending.started)
        msg_id = self._random16()
        query = wire.header(msg_id, wire.FLAG_RD, 1, 0, 0, 1) + pending.question
        query += wire.opt_record(UPSTREAM_PAYLOAD, pending.do)
        writer = None
        try:
            async with asyncio.timeout(max(0.01, min(self._timeout, remaining))):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("upstream %s:%d over TCP failed: %r", host, port, exc)
            self._demote(pending.upstream)
            pending.tcp = None
            self._attempt(pending)
            return
        finally:
            if writer is not None:
                writer.close()
        pending.tcp = None
        qlen = len(pending.question)
        if (
            len(data) < wire.HEADER_LEN
            or (data[0] << 8) | data[1] != msg_id
            or data[wire.HEADER_LEN : wire.HEADER_LEN + qlen].lower() != pending.question
        ):
            self.stats["spoofed"] += 1
            self._attempt(pending)
            return
        self._finish(pending, data)

    def _on_timeout(self, pending: _Pending) -> None:
        pending.timer = None
        self.stats["timeouts"] += 1
        self._demote(pending.upstream)
        self._attempt(pending)

    def _demote(self, index: int) -> None:
        # A failing upstream goes to the back, so the next query tries a
        # working one first (dnsmasq's "fastest server" in its simplest form).
        if len(self._order) > 1 and self._order[0] == index:
            self._order.remove(index)
            self._order.append(index)

    def _finish(self, pending: _Pending, data: bytes | None) -> None:
        self._unlink(pending)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        self._by_question.pop((pending.question, pending.do), None)
        if data is None:
            self.stats["failed"] += 1
        for done in pending.waiters:
            try:
                done(data)
            except Exception:  # one waiter's failure must not starve the others
                log.exception("forward callback failed")


def _same_host(addr: tuple[str, int], upstream: tuple[str, int]) -> bool:
    # IPv4-mapped or differently written IPv6 forms of the same address.
    try:
        return bool(
            addr[1] == upstream[1]
            and socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
            == socket.inet_pton(socket.AF_INET6, upstream[0])
        )
    except OSError:
        return False
