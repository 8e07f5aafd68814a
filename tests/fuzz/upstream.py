"""Fuzz target: what the gateway does with whatever an upstream sends back.

The whole forward path runs for each input, as in production: the
resolver's slow path, the cached forwarder, the real
``gateway.forward.Forwarder`` with its sockets, and two fake upstreams on
loopback (UDP and TCP on one port each) that answer every query with the
fuzzed bytes. So whichever of those parts checks upstream replies, the
target holds the chain to the same invariants:

- nothing raises, nothing is logged at ERROR, ``internal_errors`` stays 0;
- the client gets exactly one reply, and it parses (dnspython), has the
  query's ID and question and fits the client's size;
- whatever enters the cache parses, and so does every answer the fast path
  then serves from it to clients of the same question with other sizes;
- one client query costs at most ``MAX_UPSTREAM_QUERIES`` upstream queries.

Input: byte 0 picks the client (low nibble: ``world.UPSTREAM_CLIENTS``; bit
4: the client uses TCP); byte 1 scripts the upstreams (``Script``); the rest
is the reply, its ID replaced by the query's (a spoofer cannot guess IDs;
a broken upstream echoes them).

The event loop runs on virtual time: when nothing is ready, its clock jumps
to the next timer instead of sleeping, so a reply the forwarder ignores
costs its timeout in loop time, not in wall-clock time.
"""

from __future__ import annotations

import asyncio
import selectors
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import dns.flags
import dns.message

from gateway.forward.forwarder import Forwarder
from gateway.options import Endpoint
from tests.fuzz import world
from tests.fuzz.checks import ErrorLog, Violation, check_cache, check_reply

LOOPBACK = "127.0.0.1"
UPSTREAMS = 2
FORWARD_TIMEOUT_S = 0.5
FORWARD_DEADLINE_S = 2.0
# The client waits this long (loop time) past the forward deadline for its reply.
CLIENT_GRACE_S = 1.0
# Per attempt at most one UDP and one TCP query; at most deadline/timeout
# attempts per upstream (RFC 5452 forwarders retry, they do not spin).
MAX_UPSTREAM_QUERIES = 2 * UPSTREAMS * round(FORWARD_DEADLINE_S / FORWARD_TIMEOUT_S)
MAX_UDP_DATAGRAM = 65507


class _JumpingSelector(selectors.EpollSelector):
    """A selector whose idle waits move a virtual clock instead of sleeping.

    Only loopback I/O happens here, and Linux hands a loopback packet to the
    receiving socket before the sending call returns: when nothing is ready
    now, nothing is on its way, and the loop may skip to its next timer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skew = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and timeout is not None:
            self.skew += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a clock that jumps over idle time (see ``_JumpingSelector``)."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return time.monotonic() + self._jumping.skew


@dataclass(frozen=True)
class Script:
    """What the fake upstreams do, from the input's second byte.

    bit 0: TCP queries are answered (else the connection is closed at once);
    bit 1: the TCP answer has TC cleared; bit 2: each upstream answers only
    its first UDP query (then stays silent: the forwarder times out);
    bit 3: the second upstream is a good one (a well-formed answer).
    """

    reply: bytes
    tcp_answers: bool
    tcp_clears_tc: bool
    udp_once: bool
    second_good: bool

    @classmethod
    def of(cls, control: int, reply: bytes) -> Script:
        return cls(
            reply, bool(control & 1), bool(control & 2), bool(control & 4), bool(control & 8)
        )


class _Upstreams:
    """The fake upstreams' shared state for one input."""

    def __init__(self) -> None:
        self.script = Script(b"", False, False, False, False)
        self.queries = 0
        self.udp_answered: set[int] = set()
        self._good: dict[bytes, bytes] = {}

    def reset(self, script: Script) -> None:
        self.script = script
        self.queries = 0
        self.udp_answered.clear()

    def reply_for(self, index: int, query: bytes, tcp: bool) -> bytes | None:
        """The reply upstream ``index`` sends to ``query``, or None (silence or close)."""
        self.queries += 1
        if self.queries > MAX_UPSTREAM_QUERIES:
            return None  # the count is a finding already; let the forwarder give up
        script = self.script
        if index == 1 and script.second_good:
            return query[:2] + self._good_reply(query)[2:]
        if tcp and not script.tcp_answers:
            return None
        if not tcp and script.udp_once:
            if index in self.udp_answered:
                return None
            self.udp_answered.add(index)
        body = script.reply
        if tcp and script.tcp_clears_tc and len(body) > 2:
            body = body[:2] + bytes((body[2] & ~0x02,)) + body[3:]
        return query[:2] + body[2:] if len(body) >= 2 else body

    def _good_reply(self, query: bytes) -> bytes:
        made = self._good.get(query[2:])
        if made is None:
            parsed = dns.message.from_wire(query)
            question = query[12 : 12 + len(parsed.question[0].name.to_wire() or b"") + 4]
            do = bool(parsed.ednsflags & dns.flags.DO)
            made = world.upstream_reply(question, do, "answer")
            self._good[query[2:]] = made
        return made


class _UdpUpstream(asyncio.DatagramProtocol):
    def __init__(self, index: int, state: _Upstreams) -> None:
        self._index = index
        self._state = state
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self._state.reply_for(self._index, data, tcp=False)
        if reply is not None and self._transport is not None and len(reply) <= MAX_UDP_DATAGRAM:
            self._transport.sendto(reply, addr)


def _tcp_handler(
    index: int, state: _Upstreams
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            query = await reader.readexactly(size)
            reply = state.reply_for(index, query, tcp=True)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply) & 0xFFFF) + reply[:0xFFFF])
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


class UpstreamTarget:
    """The fuzz target; see the module docstring."""

    def __init__(self) -> None:
        self._loop = VirtualTimeLoop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._loop_errors: list[str] = []
        self._log = ErrorLog()
        self._log.install()
        self._state = _Upstreams()
        self._endpoints = tuple(
            self._loop.run_until_complete(self._serve(i)) for i in range(UPSTREAMS)
        )

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._loop_errors.append(f"{context.get('message')} ({type(exc).__name__})")

    async def _serve(self, index: int) -> Endpoint:
        """A fake upstream: UDP and TCP on one loopback port."""
        while True:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpUpstream(index, self._state), local_addr=(LOOPBACK, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                await asyncio.start_server(_tcp_handler(index, self._state), LOOPBACK, port)
            except OSError:  # the port is taken for TCP: another one
                transport.close()
                continue
            return Endpoint(LOOPBACK, port)

    def __call__(self, data: bytes) -> None:
        if len(data) < 2:
            return
        self._loop.run_until_complete(self._one(data))

    async def _one(self, data: bytes) -> None:
        client = world.UPSTREAM_CLIENTS[(data[0] & 0x0F) % len(world.UPSTREAM_CLIENTS)]
        tcp = bool(data[0] & 0x10)
        self._state.reset(Script.of(data[1], data[2:]))
        forwarder = Forwarder(
            self._loop,
            self._endpoints,
            timeout=FORWARD_TIMEOUT_S,
            deadline=FORWARD_DEADLINE_S,
            max_inflight=16,
        )
        cache = world.make_cache(self._loop.time)
        resolver = world.make_resolver(forwarder, cache)
        packet = client.packet()
        replies: list[bytes] = []
        got = self._loop.create_future()

        def reply(message: bytes) -> None:
            replies.append(message)
            if not got.done():
                got.set_result(None)

        try:
            resolver.answer_slow(packet, tcp, reply)
            try:
                async with asyncio.timeout(FORWARD_DEADLINE_S + CLIENT_GRACE_S):
                    await got
            except TimeoutError:
                pass
            for _ in range(3):  # callbacks already due (a second reply, closing sockets)
                await asyncio.sleep(0)
            self._check(client, packet, tcp, replies, resolver.metrics.counters)
            check_cache(cache, max_bytes=world.CACHE_BYTES)
            self._check_cached_answers(client, resolver.answer_fast)
        finally:
            forwarder.close()
            await resolver.close()
            # Whatever is left (a forwarder's TCP attempt, an upstream's handler)
            # must not reach into the next input.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    def _check(
        self,
        client: world.Client,
        packet: bytes,
        tcp: bool,
        replies: list[bytes],
        counters: dict[str, int],
    ) -> None:
        if self._loop_errors:
            first = self._loop_errors[0]
            self._loop_errors.clear()
            raise Violation(f"unhandled in the event loop: {first}")
        self._log.check()
        if counters["internal_errors"]:
            raise Violation("internal_errors counted")
        if self._state.queries > MAX_UPSTREAM_QUERIES:
            raise Violation(f"more than {MAX_UPSTREAM_QUERIES} upstream queries for one query")
        if len(replies) != 1:
            raise Violation(f"the client got {min(len(replies), 2)} replies, not 1")
        check_reply(packet, replies[0], tcp, world.MAX_UDP, "reply to the client")

    @staticmethod
    def _check_cached_answers(client: world.Client, answer_fast: Any) -> None:
        """Every client of the same question gets a well-formed answer from the cache:
        the clients of ``world.UPSTREAM_CLIENTS`` and the same with EDNS at 512 bytes."""
        others = [c for c in world.UPSTREAM_CLIENTS if c.question() == client.question()]
        others += [replace(c, payload=512) for c in others if c.payload]
        for other in others:
            packet = other.packet()
            for tcp in (False, True):
                try:
                    reply = answer_fast(packet, tcp)
                except Exception as exc:
                    raise Violation(
                        f"fast path raised {type(exc).__name__} on a cached answer"
                    ) from exc
                if reply is not None:
                    check_reply(packet, reply, tcp, world.MAX_UDP, "cached answer to a client")
