"""Forwarding to upstream resolvers: UDP first, TCP when truncated.

Callback-driven rather than a task per query: a miss costs one sendto, a
dict entry and a timer. Identical questions in flight share one upstream
query. Anti-spoofing (RFC 5452): random 16-bit IDs, a pool of sockets on
kernel-chosen random ports that is renewed as it is used, and a reply
counts only if it comes from the upstream's address and port to a query
still outstanding (socket and ID); a response to another question is
ignored and the query keeps waiting. Everything else about a reply is
judged by ``replies.classify``: only a whole message (every record walked,
no trailing bytes) with our question is ever handed on.

Failover, and why it is bounded: each UDP attempt waits ``timeout``, then
the next upstream is asked (round the list) and the earlier attempts stay
registered, so a late reply to any attempt still outstanding answers the
question (an upstream that always takes longer than ``timeout`` is still
heard). An upstream that *answered* unusably -- SERVFAIL, REFUSED, NOTIMP,
FORMERR, a malformed reply, or TC followed by a TCP query that failed -- is
not asked again for this question, and TCP is tried once per upstream. So
a question costs at most one TCP query per upstream and one UDP query per
upstream plus one per timeout, whatever the upstreams send. When every
upstream has answered unusably, the waiters get the last error reply that
parsed (else None); at ``deadline`` they get None (the cached forwarder
answers stale or SERVFAIL). Upstreams that fail move to the back of the
order.

Modes (dnsmasq's): ``ORDERED`` as above; ``STRICT`` (``strict-order``)
keeps the configured order, failures never reorder it; ``ALL``
(``all-servers``) sends each question to every upstream at once and the
first answer wins (a round ends when every upstream has answered unusably
or the timeout passes). The upstream list can be replaced while running
(:meth:`Forwarder.replace_upstreams`, the resolv file changed): questions
in flight finish with the list they started with.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.dns import wire
from gateway.forward.replies import Verdict, classify
from gateway.metrics import Histogram
from gateway.options import Endpoint

log = logging.getLogger(__name__)

SOCKET_POOL_SIZE = 8
# A pool socket is replaced after this many queries so source ports keep moving.
QUERIES_PER_SOCKET = 2000
UPSTREAM_PAYLOAD = 1232
SEND_ERROR_PAUSE_S = 0.05
# No attempt is started with less than this left before the deadline (timers
# may fire a little early; a query with no time to be answered is noise).
MIN_WAIT_S = 0.005
# Random bytes fetched from the OS at a time (two per query ID).
ENTROPY_BLOCK = 4096
# Largest datagram read from an upstream (a UDP payload's maximum).
MAX_DATAGRAM = 65535

Done = Callable[[bytes | None], None]


class Mode(enum.Enum):
    """How a question picks its upstreams (dnsmasq's names in brackets)."""

    ORDERED = "ordered"  # best first, failing ones move to the back (dnsmasq's default, simplified)
    STRICT = "strict"  # always in the configured order (strict-order)
    ALL = "all"  # every upstream at once, first answer wins (all-servers)


@dataclass(slots=True, eq=False)
class _Servers:
    """One version of the upstream list; questions keep the one they started with."""

    addrs: list[tuple[str, int]]
    families: list[int]
    order: list[int]

    @classmethod
    def of(cls, upstreams: tuple[Endpoint, ...]) -> _Servers:
        return cls(
            [(u.host, u.port) for u in upstreams],
            [socket.AF_INET6 if ":" in u.host else socket.AF_INET for u in upstreams],
            list(range(len(upstreams))),
        )


@dataclass(slots=True, eq=False)
class UpstreamStats:
    """What one upstream did, for the metrics (plain values, read at scrape time)."""

    name: str  # host:port
    udp_queries: int = 0
    tcp_queries: int = 0
    answers: int = 0  # replies that answered the question
    timeouts: int = 0  # UDP attempts that got no reply within the timeout
    error_replies: int = 0  # SERVFAIL, REFUSED, NOTIMP, FORMERR
    malformed: int = 0  # replies that failed the checks, TCP queries that gave nothing
    send_errors: int = 0
    rtt: Histogram = field(default_factory=Histogram)  # seconds to a usable answer


@dataclass(slots=True, eq=False)
class _Attempt:
    """One UDP query sent for a question; registered by (socket, ID) until the question ends."""

    pending: _Pending
    upstream: int
    slot: int
    msg_id: int
    sent_at: float = 0.0  # loop time


@dataclass(slots=True, eq=False)
class _Pending:
    question: bytes  # lower-case qname wire + qtype + qclass
    do: bool
    servers: _Servers
    waiters: list[Done]
    started: float
    attempts: list[_Attempt] = field(default_factory=list)  # UDP queries still outstanding
    current: _Attempt | None = None  # the latest UDP query: its timer moves the question on
    timer: asyncio.TimerHandle | None = None
    tcp: asyncio.Task[None] | None = None
    tcp_upstream: int = -1
    tried: list[int] = field(default_factory=list)  # upstreams asked in this round
    failed: set[int] = field(default_factory=set)  # answered unusably: not asked again
    last_error: bytes | None = None  # the last SERVFAIL/REFUSED/... that parsed
    finished: bool = False


class _PoolSocket:
    __slots__ = ("family", "sock", "uses")

    def __init__(self, family: int) -> None:
        self.family = family
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self.uses = 0


class Forwarder:
    """Sends questions upstream; calls back with a checked response or None."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstreams: tuple[Endpoint, ...],
        *,
        timeout: float,
        deadline: float,
        max_inflight: int,
        mode: Mode = Mode.ORDERED,
        rng: random.Random | None = None,
        upstream_stats: dict[str, UpstreamStats] | None = None,
    ) -> None:
        """``upstream_stats`` (by ``host:port``) may be shared by several forwarders
        (per-domain upstreams): one upstream's figures are then counted once."""
        self._loop = loop
        self.upstream_stats = upstream_stats if upstream_stats is not None else {}
        self._servers = _Servers.of(upstreams)
        self._mode = mode
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
        self._by_id: dict[tuple[int, int], _Attempt] = {}
        self._pools: dict[int, list[_PoolSocket | None]] = {}
        self.stats = {
            "sent": 0,
            "timeouts": 0,
            "spoofed": 0,
            "tcp": 0,
            "failed": 0,
            "overload": 0,
            # Replies that ended an attempt without an answer (RETRY_RCODES),
            # replies that failed the checks, TCP queries that gave nothing,
            # and answers to an attempt other than the latest one.
            "error_replies": 0,
            "malformed": 0,
            "tcp_failed": 0,
            "late_answers": 0,
        }

    @property
    def inflight(self) -> int:
        return len(self._by_question)

    @property
    def upstreams(self) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(host, port) for host, port in self._servers.addrs)

    def replace_upstreams(self, upstreams: tuple[Endpoint, ...]) -> None:
        """New questions go to ``upstreams``; those in flight keep their list."""
        self._servers = _Servers.of(upstreams)

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
        """Forwards ``question``; ``done`` gets the upstream response or None.

        A response handed to ``done`` has passed ``replies.classify``: a
        whole message with our question, an answer or (when every upstream
        failed) the last error reply.
        """
        key = (question, do)
        pending = self._by_question.get(key)
        if pending is not None:
            pending.waiters.append(done)
            return
        servers = self._servers
        if not servers.addrs or len(self._by_question) >= self._max_inflight:
            self.stats["overload" if servers.addrs else "failed"] += 1
            done(None)
            return
        pending = _Pending(question, do, servers, [done], self._loop.time())
        self._by_question[key] = pending
        self._attempt(pending)

    def _attempt(self, pending: _Pending) -> None:
        """Asks the next upstream over UDP, or ends the question when none is left."""
        if pending.finished:
            return
        elapsed = self._loop.time() - pending.started
        if elapsed >= self._deadline - MIN_WAIT_S:
            self._finish(pending, None)
            return
        candidates = [
            i
            for i in pending.servers.order
            if i not in pending.failed and i != pending.tcp_upstream
        ]
        if not candidates:
            if pending.tcp is None:  # every upstream answered, none usably
                self._finish(pending, pending.last_error)
            return  # else the TCP query decides
        # The best-ranked upstream not yet tried in this round; then round again.
        untried = [i for i in candidates if i not in pending.tried]
        if not untried:
            pending.tried.clear()
            untried = candidates
        sent = False
        for upstream in untried if self._mode is Mode.ALL else untried[:1]:
            pending.tried.append(upstream)
            try:
                pending.current = self._send_udp(pending, upstream)
                sent = True
            except OSError as exc:
                log.debug("upstream %s: send failed: %s", pending.servers.addrs[upstream], exc)
                self._stats(pending, upstream).send_errors += 1
                self._demote(pending, upstream)
        if not sent:
            # A short pause, so an unreachable network cannot spin the loop.
            pending.timer = self._loop.call_later(SEND_ERROR_PAUSE_S, self._retry, pending)
            return
        wait = min(self._timeout, self._deadline - elapsed)
        pending.timer = self._loop.call_later(wait, self._on_timeout, pending)

    def _stats(self, pending: _Pending, upstream: int) -> UpstreamStats:
        host, port = pending.servers.addrs[upstream]
        name = str(Endpoint(host, port))
        stats = self.upstream_stats.get(name)
        if stats is None:
            stats = self.upstream_stats[name] = UpstreamStats(name)
        return stats

    def _retry(self, pending: _Pending) -> None:
        pending.timer = None
        self._attempt(pending)

    def _send_udp(self, pending: _Pending, upstream: int) -> _Attempt:
        family = pending.servers.families[upstream]
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
        fileno = ps.sock.fileno()
        while True:
            msg_id = self._random16()
            if (fileno, msg_id) not in self._by_id:
                break
        packet = self._packet(msg_id, pending)
        ps.sock.sendto(packet, pending.servers.addrs[upstream])
        attempt = _Attempt(pending, upstream, fileno, msg_id, self._loop.time())
        self._stats(pending, upstream).udp_queries += 1
        self._by_id[(fileno, msg_id)] = attempt
        pending.attempts.append(attempt)
        self.stats["sent"] += 1
        return attempt

    def _random16(self) -> int:
        at = self._entropy_at
        if at + 2 > len(self._entropy):
            self._entropy = self._random_bytes(ENTROPY_BLOCK)
            at = 0
        self._entropy_at = at + 2
        return (self._entropy[at] << 8) | self._entropy[at + 1]

    def _packet(self, msg_id: int, pending: _Pending) -> bytes:
        # RD set: upstreams are recursive resolvers or authoritative servers
        # (which ignore it). EDNS always, so answers up to 1232 bytes come
        # over UDP; DO as the client asked.
        opt = wire.opt_record(UPSTREAM_PAYLOAD, pending.do)
        return wire.header(msg_id, wire.FLAG_RD, 1, 0, 0, 1) + pending.question + opt

    def _retire(self, ps: _PoolSocket) -> None:
        # Replies to queries still in flight on it may arrive until the deadline.
        def close() -> None:
            self._loop.remove_reader(ps.sock.fileno())
            ps.sock.close()

        self._loop.call_later(self._deadline + 0.5, close)

    def _on_readable(self, ps: _PoolSocket) -> None:
        while True:
            try:
                data, addr = ps.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable surfaces here as ECONNREFUSED; the
                # timer moves the query on.
                return
            self._on_datagram(ps.sock.fileno(), data, addr)

    def _on_datagram(self, slot: int, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < wire.HEADER_LEN:
            self.stats["spoofed"] += 1
            return
        attempt = self._by_id.get((slot, (data[0] << 8) | data[1]))
        if attempt is None:
            self.stats["spoofed"] += 1
            return
        pending = attempt.pending
        upstream = pending.servers.addrs[attempt.upstream]
        if (addr[0], addr[1]) != upstream and not _same_host(addr, upstream):
            self.stats["spoofed"] += 1
            return
        verdict = classify(data, pending.question)
        if verdict is Verdict.NOT_OURS:
            self.stats["spoofed"] += 1
            return
        # The upstream has answered this attempt, one way or another.
        self._by_id.pop((attempt.slot, attempt.msg_id), None)
        pending.attempts.remove(attempt)
        if attempt is pending.current and not (self._mode is Mode.ALL and pending.attempts):
            pending.current = None
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None
        elif attempt is pending.current:
            pass  # ALL: others of this round are still out; the round's timer stays
        elif verdict is Verdict.ANSWER:
            self.stats["late_answers"] += 1
        if verdict is Verdict.ANSWER:
            stats = self._stats(pending, attempt.upstream)
            stats.answers += 1
            stats.rtt.observe(self._loop.time() - attempt.sent_at)
            self._finish(pending, data)
        elif (
            verdict is Verdict.TRUNCATED
            and pending.tcp is None
            and attempt.upstream not in pending.failed  # its TCP was tried already
        ):
            # The whole answer over TCP, same upstream, once.
            self.stats["tcp"] += 1
            pending.tcp_upstream = attempt.upstream
            pending.tcp = self._loop.create_task(self._over_tcp(pending, attempt.upstream))
        else:  # an error reply, a malformed one, or TC while TCP is already being tried
            self._unusable(pending, attempt.upstream, verdict, data)

    async def _over_tcp(self, pending: _Pending, upstream: int) -> None:
        host, port = pending.servers.addrs[upstream]
        started = self._loop.time()
        stats = self._stats(pending, upstream)
        stats.tcp_queries += 1
        remaining = self._deadline - (started - pending.started)
        msg_id = self._random16()
        query = self._packet(msg_id, pending)
        writer = None
        data = None
        try:
            async with asyncio.timeout(max(0.01, min(self._timeout, remaining))):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("upstream %s:%d over TCP failed: %r", host, port, exc)
        finally:
            if writer is not None:
                writer.close()
        pending.tcp = None
        pending.tcp_upstream = -1
        if data is None:
            verdict = Verdict.MALFORMED
            self.stats["tcp_failed"] += 1
        elif len(data) < 2 or ((data[0] << 8) | data[1]) != msg_id:
            verdict = Verdict.MALFORMED  # one connection, one query: not spoofing, just wrong
        else:
            verdict = classify(data, pending.question, tcp=True)
            if verdict is Verdict.NOT_OURS:
                verdict = Verdict.MALFORMED
        if verdict is Verdict.ANSWER:
            stats.answers += 1
            stats.rtt.observe(self._loop.time() - started)
            self._finish(pending, data)
        else:
            self._unusable(pending, upstream, verdict, data)

    def _unusable(
        self, pending: _Pending, upstream: int, verdict: Verdict, data: bytes | None
    ) -> None:
        """``upstream`` answered without an answer: never ask it again for this question."""
        if verdict is Verdict.ERROR:
            self.stats["error_replies"] += 1
            self._stats(pending, upstream).error_replies += 1
            pending.last_error = data
        else:
            self.stats["malformed"] += 1
            self._stats(pending, upstream).malformed += 1
        pending.failed.add(upstream)
        self._demote(pending, upstream)
        if pending.tcp is None and len(pending.failed) >= len(pending.servers.addrs):
            self._finish(pending, pending.last_error)  # every upstream has answered, none usably
            return
        # Move on now unless a newer attempt (UDP with its timer, or TCP) is
        # still running: that one moves the question on when it ends.
        if pending.timer is None and pending.tcp is None:
            self._attempt(pending)

    def _on_timeout(self, pending: _Pending) -> None:
        pending.timer = None
        self.stats["timeouts"] += 1
        if pending.current is not None:
            self._stats(pending, pending.current.upstream).timeouts += 1
            self._demote(pending, pending.current.upstream)
            pending.current = None  # still registered: a late reply is welcome
        self._attempt(pending)

    def _demote(self, pending: _Pending, index: int) -> None:
        # A failing upstream goes to the back, so the next query tries a
        # working one first (dnsmasq's "fastest server" in its simplest form).
        if self._mode is Mode.STRICT:
            return
        order = pending.servers.order
        if len(order) > 1 and order[0] == index:
            order.remove(index)
            order.append(index)

    def _finish(self, pending: _Pending, data: bytes | None) -> None:
        if pending.finished:
            return
        pending.finished = True
        for attempt in pending.attempts:
            self._by_id.pop((attempt.slot, attempt.msg_id), None)
        pending.attempts.clear()
        pending.current = None
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.tcp is not None:
            pending.tcp.cancel()
            pending.tcp = None
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
