"""The hot path: answers as ready wire bytes keyed on the raw question.

A general DNS library parses a packet in ~80 us; answering 100k queries/s
leaves ~10 us for everything. So the first thing done with a packet is
:func:`question_key`: a few slices and comparisons that find the question,
case-fold the name and read the OPT record, without parsing anything else.
The key finds a prepared template; :func:`patch` copies the query's ID,
RD/CD bits and question (the client's letter case, RFC 5452 0x20) into it.

Anything unusual (other opcodes, several questions, compression in the
question, EDNS version > 0, trailing bytes) makes ``question_key`` return
None and the slow path parses the packet properly.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import NamedTuple

from . import codec, weights, wire

# Per-entry memo of truncated variants (by size limit), bounded so a client
# cycling through EDNS sizes cannot grow it.
_MAX_TRUNCATED_VARIANTS = 8
_NO_EDNS = b"\x00"


class QuestionKey(NamedTuple):
    """What the fast path learnt from a query without parsing it.

    A NamedTuple, not a frozen dataclass: it is built for every query, and
    tuple construction costs a third as much.
    """

    key: bytes
    question_end: int
    edns: bool
    do: bool
    payload: int


def question_key(data: bytes) -> QuestionKey | None:
    """The cache key of a plain query, or None for the slow path.

    Key = case-folded qname + qtype + qclass + one byte of EDNS state
    (present, DO), because those change the answer's bytes. Only the name
    is case-folded: lowering the qtype bytes would merge type 65 with 97.
    """
    n = len(data)
    # QR=0 and opcode QUERY; one question; no answer/authority records.
    if n < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return None
    zero = data.find(0, 12)
    if zero < 0:
        return None
    qend = zero + 5
    arcount = data[10:12]
    if arcount == b"\x00\x00":
        if qend != n:
            return None
        return QuestionKey(
            data[12:zero].lower() + data[zero:qend] + _NO_EDNS, qend, False, False, 512
        )
    if arcount != b"\x00\x01":
        return None
    # OPT: root owner, type 41, payload, ext-rcode, version, flags, rdlen.
    if n < qend + 11 or data[qend : qend + 3] != b"\x00\x00\x29" or data[qend + 6]:
        return None
    if qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) != n:
        return None
    do = bool(data[qend + 7] & 0x80)
    payload = (data[qend + 3] << 8) | data[qend + 4]
    return QuestionKey(
        data[12:zero].lower() + data[zero:qend] + (b"\x03" if do else b"\x01"),
        qend,
        True,
        do,
        payload if payload > 512 else 512,
    )


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
    """A prepared answer: one template, or weighted orderings of one.

    ``pick()`` returns the full template for this query; callers that have a
    size limit call ``fit()`` on it.
    """

    __slots__ = ("_first", "_rings", "_single", "_truncated", "_turn")

    def __init__(
        self,
        template: bytes | None = None,
        *,
        rings: list[list[bytes]] | None = None,
        first: weights.FirstPicker | None = None,
    ) -> None:
        self._single = template
        self._rings = rings
        self._first = first
        self._turn = 0
        self._truncated: dict[tuple[bytes, int], bytes] = {}

    def pick(self) -> bytes:
        if self._single is not None:
            return self._single
        assert self._rings is not None
        self._turn += 1
        ring = self._rings[self._first()] if self._first is not None else self._rings[0]
        return ring[self._turn % len(ring)]

    def fit(self, template: bytes, limit: int) -> bytes:
        """The template cut to ``limit`` bytes (TC set), memoised."""
        key = (template, limit)
        cut = self._truncated.get(key)
        if cut is None:
            cut = codec.truncate(template, limit)
            if len(self._truncated) >= _MAX_TRUNCATED_VARIANTS:
                self._truncated.clear()
            self._truncated[key] = cut
        return cut


def build_entry(
    question: bytes,
    answer: codec.Answer,
    *,
    edns: wire.Edns | None,
    payload: int,
    rng: random.Random,
) -> Entry:
    """Renders an answer into an Entry (weighted orderings when it has weights)."""
    if answer.weights is None or len(answer.answer) <= 1:
        order = None
        if answer.sample and len(answer.answer) > answer.sample:
            order = list(range(answer.sample))
        return Entry(codec.render(question, answer, order=order, edns=edns, payload=payload))
    prepared = weights.prepare_orderings(answer.weights, rng, k=answer.sample)
    rings = [
        [codec.render(question, answer, order=o, edns=edns, payload=payload) for o in ring]
        for ring in prepared
    ]
    first = weights.FirstPicker(answer.weights, rng) if len(prepared) > 1 else None
    return Entry(rings=rings, first=first)


class AnswerTable:
    """Prepared answers for names we are authoritative for (catalog, zones).

    Entries stay valid until the data behind them changes; the owner calls
    ``clear()`` when it swaps in new data. Bounded, least recently *added*
    evicted, so random names cannot grow it without limit.
    """

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._max = max_entries

    def get(self, key: bytes) -> Entry | None:
        return self._entries.get(key)

    def put(self, key: bytes, entry: Entry) -> None:
        if key not in self._entries and len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        self._entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
