"""A strict walk of a message that came from outside (an upstream's reply).

``wire.walk_response`` only finds record boundaries: it is run on templates
the gateway made itself, on the fast path. A message from an upstream must
be proven whole before it is cached or relayed, because a cached template is
served for its whole TTL to every client: :func:`walk_strict` follows every
name (compression pointers point backwards, RFC 1035 4.1.4, never into the
header, and at a name that ends before the pointer; names at most 255
bytes), checks the record data of every type (names in NS, CNAME, SOA,
MX, SRV, ... and A and AAAA lengths by hand; other types with dnspython's
decoder for the type) and the OPT rules
of RFC 6891 6.1.1, and accepts no byte after the last record.

It costs a few dictionary operations per name: compression pointers usually
point at a name already walked, whose length is remembered.
"""

from __future__ import annotations

import struct
from typing import Final

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gateway.dns import wire
from gateway.dns.wire import FormatError, Layout, RecordSpan

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_OPTION_HEAD = struct.Struct("!HH")
# Fixed-size record data (RFC 1035 3.4.1, RFC 3596 2.2).
_FIXED_RDLEN: Final = {wire.A: 4, wire.AAAA: 16}
# Record data made of names, as (bytes before the names, names, bytes after
# them): the types whose names may be compressed (RFC 3597 4) or that
# servers compress anyway (SRV), and that clients decode.
_NAME_RDATA: Final = {
    wire.NS: (0, 1, 0),
    3: (0, 1, 0),  # MD
    4: (0, 1, 0),  # MF
    wire.CNAME: (0, 1, 0),
    wire.SOA: (0, 2, 20),  # MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM
    7: (0, 1, 0),  # MB
    8: (0, 1, 0),  # MG
    9: (0, 1, 0),  # MR
    wire.PTR: (0, 1, 0),
    14: (0, 2, 0),  # MINFO
    wire.MX: (2, 1, 0),
    17: (0, 2, 0),  # RP
    18: (2, 1, 0),  # AFSDB
    21: (2, 1, 0),  # RT
    26: (2, 2, 0),  # PX
    wire.SRV: (6, 1, 0),  # priority, weight, port, target
    36: (2, 1, 0),  # KX
    39: (0, 1, 0),  # DNAME
}


def _name(data: bytes, pos: int, known: dict[int, int]) -> int:
    """The offset just past the name at ``pos``; FormatError if it is not a valid name.

    A compression pointer must point backwards, before the part of the name
    it is read from (RFC 1035 4.1.4; which also rules out loops), never into
    the header, and what it points at must end before the pointer itself.
    ``known`` maps offsets where a valid name (or name suffix) starts to its
    uncompressed length; it is read to cut pointer chains short and filled
    with every label start walked here.
    """
    limit = pos  # a pointer must point before the part it is read from
    ceiling = len(data)  # the labels read must end before this
    end = -1
    length = 0  # uncompressed bytes of the labels walked so far
    walked: list[tuple[int, int]] = []  # (label offset, length before it)
    tail = 0
    while True:
        if pos >= ceiling:
            raise FormatError("name runs past the end of its space")
        size = data[pos]
        if size == 0:
            tail = 1
            if end < 0:
                end = pos + 1
            walked.append((pos, length))
            break
        if size < 0x40:
            if pos + 1 + size >= ceiling:
                raise FormatError("label runs past the end of its space")
            walked.append((pos, length))
            length += 1 + size
            pos += 1 + size
            if length > wire.MAX_NAME_LEN:
                raise FormatError("name longer than 255 bytes")
            continue
        if size < 0xC0:
            raise FormatError("unknown label type")
        if pos + 2 > ceiling:
            raise FormatError("truncated compression pointer")
        target = ((size & 0x3F) << 8) | data[pos + 1]
        if target >= limit:
            raise FormatError("compression pointer does not point backwards")
        if target < wire.HEADER_LEN:
            # No name lives there; and templates rewrite the header's bytes.
            raise FormatError("compression pointer into the header")
        if end < 0:
            end = pos + 2
        seen = known.get(target)
        if seen is not None:
            tail = seen
            break
        ceiling = pos
        pos = limit = target
    total = length + tail
    if total > wire.MAX_NAME_LEN:
        raise FormatError("name longer than 255 bytes")
    for offset, before in walked:
        known[offset] = total - before
    return end


def _opt(data: bytes, start: int, rdata: int, end: int, section: int, seen: bool) -> None:
    """RFC 6891 6.1.1: one OPT at most, in the additional section, owned by the root."""
    if section != 2:
        raise FormatError("OPT record outside the additional section")
    if seen:
        raise FormatError("more than one OPT record")
    if data[start] != 0:
        raise FormatError("OPT owner is not the root")
    pos = rdata
    while pos < end:  # options: code, length, value (RFC 6891 6.1.2)
        if pos + 4 > end:
            raise FormatError("OPT option header runs past the record")
        _, size = _OPTION_HEAD.unpack_from(data, pos)
        pos += 4 + size
        if pos > end:
            raise FormatError("OPT option runs past the record")


def _names_rdata(data: bytes, rdata: int, end: int, shape: tuple[int, int, int],
                 known: dict[int, int]) -> None:  # fmt: skip
    before, names, after = shape
    pos = rdata + before
    for _ in range(names):
        if pos >= end:
            raise FormatError("record data too short for its names")
        pos = _name(data, pos, known)
    if pos + after != end:
        raise FormatError("record data does not match its type's layout")


def _other_rdata(data: bytes, rclass: int, rtype: int, rdata: int, rdlen: int) -> None:
    """Any other type's data, checked by dnspython's decoder for that type.

    The hand-written checks above cover what cache misses carry most (A,
    AAAA, names); the rest (TXT, CAA, HTTPS, ...) have inner lengths a
    client's decoder trusts, so they are held to dnspython, which knows
    every type's layout. Unknown types decode as opaque data (RFC 3597).
    """
    try:
        dns.rdata.from_wire(
            dns.rdataclass.RdataClass.make(rclass),
            dns.rdatatype.RdataType.make(rtype),
            data,
            rdata,
            rdlen,
        )
    except Exception as exc:  # dnspython raises several kinds; each means "not whole"
        raise FormatError(f"type {rtype} record data does not decode: {exc}") from None


def walk_strict(data: bytes) -> Layout:
    """Every record of a message, each one checked; FormatError unless it is whole.

    The layout is the one ``wire.walk_response`` gives for the same message.
    """
    n = len(data)
    if n < wire.HEADER_LEN:
        raise FormatError("shorter than a DNS header")
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    known: dict[int, int] = {}
    pos = wire.HEADER_LEN
    for _ in range(qdcount):
        pos = _name(data, pos, known) + 4
        if pos > n:
            raise FormatError("question runs past the end of the message")
    question_end = pos
    sections: list[tuple[RecordSpan, ...]] = []
    seen_opt = False
    for section, count in enumerate((ancount, nscount, arcount)):
        spans = []
        for _ in range(count):
            start = pos
            pos = _name(data, pos, known)
            if pos + 10 > n:
                raise FormatError("record runs past the end of the message")
            rtype, _rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            ttl_offset = pos + 4
            rdata = pos + 10
            pos = rdata + rdlen
            if pos > n:
                raise FormatError("record data runs past the end of the message")
            if rtype == wire.OPT:
                _opt(data, start, rdata, pos, section, seen_opt)
                seen_opt = True
            elif rtype in _FIXED_RDLEN and _rclass == wire.CLASS_IN:
                # Only in class IN: CHAOS's A is a name and a number (RFC 1035 3.4.1
                # is IN's), and a client decodes it as that, so dnspython judges it.
                if rdlen != _FIXED_RDLEN[rtype]:
                    raise FormatError(f"type {rtype} record data of {rdlen} bytes")
            else:
                shape = _NAME_RDATA.get(rtype)
                if shape is not None:
                    _names_rdata(data, rdata, pos, shape, known)
                else:
                    _other_rdata(data, _rclass, rtype, rdata, rdlen)
            spans.append(RecordSpan(start, pos, rtype, ttl_offset, ttl))
        sections.append(tuple(spans))
    if pos != n:
        raise FormatError("trailing bytes after the last record")
    return Layout(question_end, sections[0], sections[1], sections[2])
