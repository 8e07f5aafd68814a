"""Fuzz targets for the query side: the parser, the fast path, the slow path.

Each target is a callable taking one input (bytes) that returns normally or
raises: :class:`~tests.fuzz.checks.Violation` when an invariant fails, any
other exception when the gateway raised. Inputs of the fast- and slow-path
targets start with a control byte (see each class), then the packet as a
client sent it. The forwarder's side is in ``upstream.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message

from gateway.dns import fastpath, wire
from tests.fuzz import world
from tests.fuzz.checks import ErrorLog, Violation, check_cache, check_reply, parse

Target = Callable[[bytes], None]


class QueryTarget:
    """``wire.parse_query``: a Query or FormatError, and a Query that is the packet's.

    Where dnspython reads the packet too, both read the same ID, question
    and EDNS state; where the fast path keys the packet at the same question,
    its key is the parsed question's.
    """

    def __init__(self) -> None:
        self._key_of = fastpath.make_key_function()

    def __call__(self, data: bytes) -> None:
        try:
            query = wire.parse_query(data)
        except wire.FormatError:
            return
        end = query.question_end
        if not wire.HEADER_LEN < end <= len(data):
            raise Violation("question_end outside the packet")
        if query.msg_id != int.from_bytes(data[:2], "big"):
            raise Violation("ID is not the packet's")
        if data[wire.HEADER_LEN : end - 4] != query.qname_wire:
            raise Violation("qname_wire is not the packet's name")
        if wire.to_wire(query.qname) != query.qname_wire.lower():
            raise Violation("qname is not qname_wire lower-cased")
        if query.edns is not None and query.edns.payload < wire.CLASSIC_UDP_LIMIT:
            raise Violation("EDNS payload below 512")
        self._same_key(data, query)
        try:
            message = dns.message.from_wire(data)
        except Exception:  # dnspython is stricter about record data: nothing to compare
            return
        self._same_as_dnspython(message, query)

    def _same_key(self, data: bytes, query: wire.Query) -> None:
        key = self._key_of(data, False)
        if key is None or len(key) + 11 != query.question_end:
            return  # the resolver keys nothing then
        if key[:-1] != query.qname_wire.lower() + data[query.question_end - 4 : query.question_end]:
            raise Violation("fast-path key is not the parsed question")

    @staticmethod
    def _same_as_dnspython(message: dns.message.Message, query: wire.Query) -> None:
        if len(message.question) != 1:
            raise Violation("dnspython reads another number of questions")
        question = message.question[0]
        if question.name != query.qname or question.rdtype != query.qtype:
            raise Violation("dnspython reads another question")
        if question.rdclass != query.qclass or message.id != query.msg_id:
            raise Violation("dnspython reads another class or ID")
        if (message.edns >= 0) != (query.edns is not None):
            raise Violation("dnspython reads another EDNS presence")
        if query.edns is not None:
            if message.edns != query.edns.version:
                raise Violation("dnspython reads another EDNS version")
            if bool(message.ednsflags & dns.flags.DO) != query.edns.do:
                raise Violation("dnspython reads another DO bit")


class _SyncUpstream:
    """A fake forwarder that answers at once with a well-formed reply of ``kind``
    (a ``world.REPLY_KINDS`` name), or fails (None)."""

    # Replies kept for reuse (made with dnspython, ~100 us each).
    MAX_KEPT = 4096

    def __init__(self) -> None:
        self.kind: str | None = "answer"
        self._made: dict[tuple[bytes, bool, str], bytes | None] = {}

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        kind = self.kind
        if kind is None:
            done(None)
            return
        key = (question, do, kind)
        if key not in self._made:
            if len(self._made) >= self.MAX_KEPT:
                self._made.clear()
            try:
                self._made[key] = world.upstream_reply(question, do, kind)
            except Exception:  # a question dnspython cannot answer: the upstream fails
                self._made[key] = None
        done(self._made[key])


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def kind_for(name: bytes) -> str:
    """Which reply the fake upstream gives a forwarded name (by its first label)."""
    label = name[1 : 1 + name[0]] if name else b""
    return {b"big": "big", b"nx": "nxdomain", b"mail": "cname"}.get(label, "answer")


class FastPathTarget:
    """``make_fast_answer`` over a populated answer table and cache.

    Control byte: bit 0 TCP; bits 1-2 the cache clock (same second as
    stored, 1.5 s later: TTLs re-aged, 45 s later, expired). Invariants:
    never raises; None or a reply that parses, has the query's ID and
    question and fits the client; the parser accepts every packet the fast
    path answers; the slow path gives the same rcode, flags and answer names.
    """

    CLOCK_OFFSETS_S = (0.0, 1.5, 45.0, 10_000.0)

    def __init__(self) -> None:
        self._clock = _Clock(world.STORED_AT)
        self._upstream = _SyncUpstream()
        self._cache = world.make_cache(self._clock)
        self._resolver = world.make_resolver(self._upstream, self._cache)
        for client in world.local_clients():
            self._upstream.kind = kind_for(client.question())
            for tcp in (False, True):
                self._resolver.answer_slow(client.packet(), tcp, lambda _reply: None)
        self._upstream.kind = "answer"
        self._saved = list(self._cache.entries.items())

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        control, packet = data[0], data[1:]
        tcp = bool(control & 1)
        self._clock.now = world.STORED_AT + self.CLOCK_OFFSETS_S[(control >> 1) & 3]
        # The same cache for every input (entries are re-aged in place).
        self._cache.entries.clear()
        self._cache.entries.update(self._saved)
        reply = self._resolver.answer_fast(packet, tcp)
        if reply is None:
            return
        check_reply(packet, reply, tcp, world.MAX_UDP, "fast-path reply")
        try:
            wire.parse_query(packet)
        except wire.FormatError as exc:
            raise Violation("fast path answered a packet the parser refuses") from exc
        slow: list[bytes] = []
        self._resolver.answer_slow(packet, tcp, slow.append)
        if len(slow) != 1:
            raise Violation("slow path did not answer what the fast path answered")
        _same_answer(parse(reply, "fast-path reply"), parse(slow[0], "slow-path reply"))


def _same_answer(fast: dns.message.Message, slow: dns.message.Message) -> None:
    if fast.rcode() != slow.rcode():
        raise Violation("fast and slow path differ in rcode")
    flags = dns.flags.AA | dns.flags.TC
    if fast.flags & flags != slow.flags & flags:
        raise Violation("fast and slow path differ in AA/TC")
    if fast.flags & dns.flags.TC:
        return  # what fits depends on the (weighted) order
    fast_names = sorted((r.name, r.rdtype, len(r)) for r in fast.answer)
    slow_names = sorted((r.name, r.rdtype, len(r)) for r in slow.answer)
    if fast_names != slow_names:
        raise Violation("fast and slow path differ in the answer section")


class SlowPathTarget:
    """``Resolver.answer_slow`` with a fake forwarder.

    Control byte: bit 0 TCP; bits 1-3 what the upstream does (answer, a big
    answer, NXDOMAIN, NODATA, SERVFAIL, a CNAME chain, fail). Invariants:
    never raises, nothing logged at ERROR, ``internal_errors`` stays 0, at
    most one reply, and a reply parses, has the query's ID and fits the client.
    """

    KINDS = (*world.REPLY_KINDS, None)

    def __init__(self) -> None:
        self._upstream = _SyncUpstream()
        self._cache = world.make_cache(_Clock(world.STORED_AT))
        self._resolver = world.make_resolver(self._upstream, self._cache)
        self._log = ErrorLog()
        self._log.install()
        self._key_of = fastpath.make_key_function()

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        control, packet = data[0], data[1:]
        tcp = bool(control & 1)
        self._upstream.kind = self.KINDS[(control >> 1) % len(self.KINDS)]
        replies: list[bytes] = []
        self._resolver.answer_slow(packet, tcp, replies.append)
        self._log.check()
        if self._resolver.metrics.counters["internal_errors"]:
            raise Violation("internal_errors counted")
        if len(replies) > 1:
            raise Violation("more than one reply")
        for reply in replies:
            check_reply(packet, reply, tcp, world.MAX_UDP, "slow-path reply")
        check_cache(self._cache, [self._key_of(packet, tcp)])
