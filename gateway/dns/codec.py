"""Answers as values, rendered to wire templates; truncation.

An answerer (catalog, zones) returns an :class:`Answer`; :func:`render`
turns it into a response *template*: a complete message with ID 0, the
question in lower case and the RD/CD bits clear. The fast path copies the
client's ID, flags and question into a template per query (``fastpath.py``),
so a template is built once per data change, not per query.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.dns import wire


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``name`` is uncompressed wire form."""

    name: bytes
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = wire.CLASS_IN


@dataclass(frozen=True, slots=True)
class Answer:
    """What an answerer decided, before any wire encoding.

    ``weights`` (one per answer record) makes the answer section order
    weighted-random per query; ``sample`` > 0 keeps only that many answer
    records (a weighted sample, Consul's ``a_record_limit`` done right).
    """

    rcode: int
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    authoritative: bool = True
    weights: tuple[float, ...] | None = None
    sample: int = 0


def response_flags(rcode: int, *, authoritative: bool, truncated: bool = False) -> int:
    flags = wire.FLAG_QR | wire.FLAG_RA | (rcode & 0xF)
    if authoritative:
        flags |= wire.FLAG_AA
    if truncated:
        flags |= wire.FLAG_TC
    return flags


def render(
    question: bytes,
    answer: Answer,
    *,
    order: Sequence[int] | None = None,
    edns: wire.Edns | None,
    payload: int,
    limit: int = wire.TCP_LIMIT,
) -> bytes:
    """A response template for ``answer`` of at most ``limit`` bytes.

    ``question`` is qname wire + qtype + qclass. ``order`` picks and orders
    the answer records (indexes); the other sections are fixed. ``payload``
    is the UDP size we advertise in our OPT when the client sent EDNS.
    Records are written in section order until one does not fit; then the
    rest is left out and TC is set (see :func:`truncate` for why TC is set
    even when only additional records are missing). The cost is that of
    the records that fit, so a 512-byte answer for a 5,000-instance service
    is as cheap as a small one.
    """
    w = wire.MessageWriter(question)
    opt = wire.opt_record(payload, edns.do) if edns is not None else b""
    budget = limit - len(opt)
    records = answer.answer if order is None else [answer.answer[i] for i in order]
    counts = [0, 0, 0]
    truncated = False
    for section, rrs in enumerate((records, answer.authority, answer.additional)):
        for rr in rrs:
            mark = len(w)
            w.add(rr.name, rr.rtype, rr.rclass, rr.ttl, rr.rdata)
            if len(w) > budget:
                w.rollback(mark)
                truncated = True
                break
            counts[section] += 1
        if truncated:
            break
    if opt:
        w.append_raw(opt)
    flags = response_flags(answer.rcode, authoritative=answer.authoritative, truncated=truncated)
    return w.finish(0, flags, counts[0], counts[1], counts[2] + (1 if opt else 0))


def truncate(message: bytes, limit: int) -> bytes:
    """Cuts a response to at most ``limit`` bytes at a record boundary.

    Keeps header, question and as many whole records (in section order) as
    fit, re-appends the OPT record, and sets TC whenever any record was
    left out, so the client retries over TCP and gets everything there.
    Compression pointers only point backwards, so any prefix of whole
    records stays a valid message.
    """
    if len(message) <= limit:
        return message
    layout = wire.walk_response(message)
    opt = b""
    spans = [*layout.answer, *layout.authority, *layout.additional]
    if spans and spans[-1].rtype == wire.OPT:
        opt = message[spans[-1].start : spans[-1].end]
        spans = spans[:-1]
    budget = limit - len(opt)
    end = layout.question_end
    kept = 0
    for span in spans:
        if span.end > budget:
            break
        end = span.end
        kept += 1
    counts = [len(layout.answer), len(layout.authority), len(layout.additional) - (1 if opt else 0)]
    new_counts = []
    left = kept
    for count in counts:
        take = min(count, left)
        new_counts.append(take)
        left -= take
    msg_id, flags = struct.unpack_from("!HH", message)
    flags |= wire.FLAG_TC
    head = wire.header(
        msg_id, flags, 1, new_counts[0], new_counts[1], new_counts[2] + (1 if opt else 0)
    )
    return head + message[wire.HEADER_LEN : end] + opt
