"""The hot path: answers as ready wire bytes keyed on the raw question.

A general DNS library parses a packet in ~80 us; answering 100k queries/s
leaves ~10 us for everything. So the first thing done with a packet is to
key it (:func:`make_fast_answer`): a few slices and comparisons that find
the question, case-fold the name and read the OPT record, without parsing
anything else. The key finds a prepared template (an :class:`Entry` of the
:class:`AnswerTable` for catalog and zone answers, or a cached forwarded
answer); the query's ID, RD/CD bits and question (the client's letter case,
RFC 5452 0x20) are copied into it (:func:`patch`).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, MutableSequence

from gateway.cache.store import AGE, EXPIRES, STORED, TALLY, WIRE, CachePolicy, ForwardCache
from gateway.catalog import weights
from gateway.dns import codec, wire

# Templates one entry keeps (orderings x size limits). Every prepared
# ordering (at most ORDERINGS_PER_FIRST x MANY_RECORDS = 128) fits twice:
# the common traffic (no EDNS: 512; EDNS: the size most clients send, capped
# at --udp-max-payload) renders each template once. A client cycling through
# EDNS sizes makes the entry drop its oldest templates instead of growing
# (issue 9: a sweep of sizes 512-1232 grew RSS by 76 MB at up to 1,024 per entry).
MAX_TEMPLATES_PER_ENTRY = 2 * weights.ORDERINGS_PER_FIRST * weights.MANY_RECORDS
# What an entry costs in memory besides the bytes of its templates, in bytes:
# estimates for the byte bound of the AnswerTable, measured with tracemalloc
# on CPython 3.11 (tests/unit/dns/test_fastpath.py keeps them honest).
ENTRY_BYTES = 1000  # the Entry, its two dicts, its Answer, the table's slot
RECORD_BYTES = 100  # one Record object of the kept Answer, without its rdata
TEMPLATE_BYTES = 200  # one template's dict slot, key tuple and bytes header
ORDERING_BYTES = 100  # one prepared ordering's list, without its slots
ORDERING_SLOT_BYTES = 8  # one index of a prepared ordering (small ints are shared)
# No byte bound (tests, and the key-only closure's empty table).
UNBOUNDED = 2**62


def patch(template: bytes, query: bytes, question_end: int) -> bytes:
    """The template with the query's ID, RD and CD bits and question copied in."""
    return b"".join(
        (
            query[:2],
            bytes((template[2] | (query[2] & 0x01), template[3] | (query[3] & 0x10))),
            template[4:12],
            query[12:question_end],
            template[question_end:],
        )
    )


class Entry:
    """A prepared answer: templates rendered on first use, per size limit.

    ``pick(limit)`` returns a template of at most ``limit`` bytes (TC set
    when records were left out); ``single``, when not None, is the one
    template every query gets (the fast path reads it without a call).
    Without weights there is one ordering; with weights, the first record
    is drawn exactly by weight per query (from draws made in bulk,
    ``weights.SlotDraws``) and the rest of the order comes from a few
    prepared orderings for that first record. Orderings and their templates
    are made lazily, so building an entry for a 5,000-instance service
    costs nothing until it is asked, and a UDP answer renders only what fits.
    Templates are kept by ``limit << 8 | slot`` (an int: no tuple per query).
    """

    __slots__ = (
        "_account",
        "_answer",
        "_at",
        "_drawer",
        "_draws",
        "_edns",
        "_orderings",
        "_payload",
        "_question",
        "_rng",
        "_size",
        "_templates",
        "single",
        "tally",
    )  # fmt: skip

    def __init__(
        self,
        question: bytes,
        answer: codec.Answer,
        *,
        edns: wire.Edns | None,
        payload: int,
        rng: random.Random,
        tally: int = 0,
    ) -> None:
        """``tally`` is the answer's slot in the metrics' answer tally
        (``Metrics.tally.index``); each answer from it counts there."""
        self.tally = tally
        self._question = question
        self._answer = answer
        self._edns = edns
        self._payload = payload
        self._rng = rng
        # Estimated bytes held; charged to the table's account once put there.
        self._account: _Account | None = None
        records = (*answer.answer, *answer.authority, *answer.additional)
        self._size = ENTRY_BYTES + len(question) + sum(RECORD_BYTES + len(r.rdata) for r in records)
        self._templates: dict[int, bytes] = {}
        self._orderings: dict[int, list[int]] = {}
        n = len(answer.answer)
        # The slot of each coming query, used up in order, and who draws more.
        self._draws = _ONE_SLOT
        self._at = 0
        self._drawer: weights.SlotDraws | None = None
        self.single: bytes | None = None
        if answer.weights is not None and n > 1:
            if n <= weights.MANY_RECORDS:
                self._drawer = weights.SlotDraws(answer.weights, weights.ORDERINGS_PER_FIRST, rng)
                self._draws = b""  # drawn at the first query
                self._size += weights.DRAWS
            else:
                self._draws = _RING_SLOTS  # whole orderings cycled, no exact first draw
            return
        order = list(range(answer.sample)) if 0 < answer.sample < n else list(range(n))
        self._orderings[0] = order
        full = codec.render(question, answer, order=order, edns=edns, payload=payload)
        # The common case (no weights, fits in any UDP answer) is one template.
        if len(full) <= wire.CLASSIC_UDP_LIMIT:
            self.single = full
        self._templates[wire.TCP_LIMIT << 8] = full
        self._size += _ordering_bytes(order) + TEMPLATE_BYTES + len(full)

    def pick(self, limit: int) -> bytes:
        single = self.single
        if single is not None:
            return single
        at = self._at
        draws = self._draws
        if at >= len(draws):
            at = 0
            if self._drawer is not None:
                draws = self._draws = self._drawer.draw()
        self._at = at + 1
        slot = draws[at]
        template = self._templates.get(limit << 8 | slot)
        if template is None:
            template = self._render(slot, limit)
        return template

    def _render(self, slot: int, limit: int) -> bytes:
        order = self._orderings.get(slot)
        if order is None:
            answer = self._answer
            assert answer.weights is not None
            first = slot // weights.ORDERINGS_PER_FIRST if self._drawer is not None else None
            order = weights.weighted_order(answer.weights, self._rng, first=first, k=answer.sample)
            self._orderings[slot] = order
            self._grow(_ordering_bytes(order))
        full = self._templates.get(wire.TCP_LIMIT << 8 | slot)
        if full is not None and len(full) <= limit:
            template = full
        else:
            template = codec.render(
                self._question, self._answer, order=order, edns=self._edns,
                payload=self._payload, limit=limit,
            )  # fmt: skip
        templates = self._templates
        if len(templates) >= MAX_TEMPLATES_PER_ENTRY:
            # The oldest goes (insertion order): a hit must not pay for recency.
            dropped = templates.pop(next(iter(templates)))
            self._grow(-(TEMPLATE_BYTES + len(dropped)))
        templates[limit << 8 | slot] = template
        self._grow(TEMPLATE_BYTES + len(template))
        return template

    @property
    def size(self) -> int:
        """Estimated bytes this entry holds (its templates included)."""
        return self._size

    def _grow(self, change: int) -> None:
        self._size += change
        account = self._account
        if account is not None:
            account.charge(change)


# The slots of entries without an exact draw: one ordering, or a ring of them.
_ONE_SLOT = b"\x00"
_RING_SLOTS = bytes(range(weights.RING_SIZE))


def _ordering_bytes(order: list[int]) -> int:
    return ORDERING_BYTES + ORDERING_SLOT_BYTES * len(order)


class _Account:
    """The estimated bytes of one AnswerTable's entries, until it is cleared.

    Entries charge their growth (templates rendered later) here; over the
    limit, the table evicts its oldest entries. ``clear()`` starts a new
    account, so entries of the old data charge nothing to the new one.
    """

    __slots__ = ("table", "used")

    def __init__(self, table: AnswerTable | None) -> None:
        self.table = table
        self.used = 0

    def charge(self, change: int) -> None:
        self.used += change
        table = self.table
        if table is not None and self.used > table.max_bytes:
            table.shrink()


class AnswerTable:
    """Prepared answers for names we are authoritative for (catalog, zones).

    Entries stay valid until the data behind them changes; the owner calls
    ``clear()`` when it swaps in new data. Bounded by entry count and by
    estimated bytes (``Entry.size``, which grows as an entry renders
    templates), least recently *added* evicted, so neither random names nor
    clients cycling through EDNS sizes can grow it without limit.
    """

    # __weakref__: a catalog source that outlives a resolver (reload) clears
    # the table through a weak reference, so the old one can go.
    __slots__ = ("__weakref__", "_account", "_max", "entries", "evicted", "max_bytes")

    def __init__(self, max_entries: int, max_bytes: int = UNBOUNDED) -> None:
        # Public for the hot path (make_fast_answer); mutate only through put/clear.
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._max = max_entries
        self.max_bytes = max_bytes
        self._account = _Account(self)
        self.evicted = 0  # entries dropped to stay within the bounds (a metric)

    def get(self, key: bytes) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: bytes, entry: Entry) -> None:
        entries = self.entries
        old = entries.get(key)
        if old is not None:
            self._detach(old)
        elif len(entries) >= self._max:
            self._detach(entries.popitem(last=False)[1])
            self.evicted += 1
        entries[key] = entry
        # The key and the table's slot count as the entry's own.
        entry._size += len(key)
        entry._account = self._account
        self._account.charge(entry._size)

    def shrink(self) -> None:
        """Evicts the oldest entries until the estimate is within ``max_bytes``."""
        entries = self.entries
        while self._account.used > self.max_bytes and entries:
            self._detach(entries.popitem(last=False)[1])
            self.evicted += 1

    def _detach(self, entry: Entry) -> None:
        if entry._account is self._account:
            self._account.used -= entry._size
        entry._account = None

    def clear(self) -> None:
        self.entries.clear()
        self._account.table = None
        self._account = _Account(self)

    @property
    def bytes(self) -> int:
        """Estimated bytes held by the entries (a metric)."""
        return self._account.used

    def __len__(self) -> int:
        return len(self.entries)


FastAnswer = Callable[[bytes, bool], "bytes | None"]


def make_fast_answer(
    local: AnswerTable,
    cache: ForwardCache,
    max_udp: int,
    *,
    key_only: bool = False,
    tally: MutableSequence[int] | None = None,
) -> FastAnswer:
    """The hot path as one closure: key, lookup, size, patch; no other calls.

    The key is the case-folded qname + qtype + qclass + one byte of EDNS
    state (none, present, present with DO), because those change the
    answer's bytes. Only the name is case-folded: lowering the qtype bytes
    would merge type 65 with 97. Anything unusual (other opcodes, several
    questions, records besides one OPT, EDNS version > 0, trailing bytes)
    gives None and the slow path parses the packet properly.

    With ``key_only`` the closure returns the key itself (None where the
    fast path would not answer): the slow path keys the cache and the
    answer table with it, so there is one implementation of the key. It
    costs the answering closure one test of a constant per query; every
    other Python call would cost ~60 ns, and calls were a third of the time
    spent in Python per answer (py-spy, 2-core machines).

    ``tally`` (``Metrics.tally.counts``) counts each answer in the slot its
    entry carries: one list increment per answer, the only metric cost here.
    """
    counts: MutableSequence[int] = tally if tally is not None else _Uncounted()
    local_get = local.entries.get
    cache_get = cache.entries.get
    cache_current = cache.current
    clock = cache.clock
    truncate = codec.truncate
    no_answer_counts = b"\x00\x01\x00\x00\x00\x00"

    def answer(data: bytes, tcp: bool) -> bytes | None:
        n = len(data)
        # QR=0 and opcode QUERY; one question; no answer/authority records.
        if n < 17 or data[2] & 0xF8 or data[4:10] != no_answer_counts:
            return None
        zero = data.find(0, 12)
        if zero < 0:
            return None
        qend = zero + 5
        arcount = data[10:12]
        if arcount == b"\x00\x00":
            if qend != n:
                return None
            key = data[12:zero].lower() + data[zero:qend] + b"\x00"
            limit = 65535 if tcp else 512
        elif arcount == b"\x00\x01":
            # OPT: root owner, type 41, payload, ext-rcode, version 0, flags, rdlen.
            if n < qend + 11 or data[qend : qend + 3] != b"\x00\x00\x29" or data[qend + 6]:
                return None
            if qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) != n:
                return None
            key = data[12:zero].lower() + data[zero:qend]
            key += b"\x03" if data[qend + 7] & 0x80 else b"\x01"
            if tcp:
                limit = 65535
            else:
                limit = (data[qend + 3] << 8) | data[qend + 4]
                limit = 512 if limit < 512 else (max_udp if limit > max_udp else limit)
        else:
            return None
        if key_only:
            return key
        entry = local_get(key)
        if entry is not None:
            # Most entries have one template: read it, no call (~60 ns saved).
            template = entry.single or entry.pick(limit)
            counts[entry.tally] += 1
        else:
            cached = cache_get(key)
            if cached is None:
                return None
            now = clock()
            if now >= cached[EXPIRES]:  # expired: the slow path forwards or serves stale
                return None
            if int(now - cached[STORED]) == cached[AGE]:  # TTLs still right this second
                template = cached[WIRE]
            else:  # TTLs move once a second; so does the LRU position
                template = cache_current(key, cached, now)
            if len(template) > limit:
                template = truncate(template, limit)
            counts[cached[TALLY]] += 1
        # patch(), written out: the call alone was +1,000 instructions (+5.7%)
        # per catalog answer (callgrind, 2,000 answers); a unit test holds
        # this equal to patch() on 20,000 mutated packets.
        return b"".join(
            (
                data[:2],
                bytes((template[2] | (data[2] & 0x01), template[3] | (data[3] & 0x10))),
                template[4:12],
                data[12:qend],
                template[qend:],
            )
        )

    return answer


class _Uncounted(list[int]):
    """A tally that counts nothing (no metrics given: tests, the key function)."""

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        return 0

    def __setitem__(self, index: int, value: int) -> None:  # type: ignore[override]
        return None


def _no_cache() -> ForwardCache:
    return ForwardCache(CachePolicy(0, 0, 0, 0, 0.0, 0), clock=lambda: 0.0)


def make_key_function() -> FastAnswer:
    """The fast path's key of a packet, or None where the fast path declines it.

    ``len(key) + 11`` is where the question ends in the packet.
    """
    return make_fast_answer(AnswerTable(0), _no_cache(), 512, key_only=True)


def make_local_answer(
    local: AnswerTable, max_udp: int, tally: MutableSequence[int] | None = None
) -> FastAnswer:
    """The fast path without forwarded answers: catalog and zone entries only.

    For clients that may not have forwarded answers (``--allow-recursion``):
    the same closure over an empty cache, so a cached forwarded answer goes
    to the slow path, which refuses it. Nothing is added per query.
    """
    return make_fast_answer(local, _no_cache(), max_udp, tally=tally)
