"""DNS wire format: the few pieces the gateway reads and writes itself.

The hot path never hands a packet to a general DNS library (see
``fastpath.py``); this module holds what it and the slow path share: message
constants, a strict query parser, a walker over resource records (for TTL
patching and truncation of forwarded answers), and a message writer with name
compression.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import dns.flags
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

HEADER_LEN = 12
MAX_NAME_LEN = 255
# RFC 1035 4.2.1: without EDNS a UDP answer is at most 512 bytes.
CLASSIC_UDP_LIMIT = 512
TCP_LIMIT = 65535

# Constants come from dnspython, as plain ints: the hot path and the
# template code compare and pack them, and an IntEnum would cost a lookup.
A = int(dns.rdatatype.A)
NS = int(dns.rdatatype.NS)
CNAME = int(dns.rdatatype.CNAME)
SOA = int(dns.rdatatype.SOA)
PTR = int(dns.rdatatype.PTR)
MX = int(dns.rdatatype.MX)
TXT = int(dns.rdatatype.TXT)
AAAA = int(dns.rdatatype.AAAA)
SRV = int(dns.rdatatype.SRV)
OPT = int(dns.rdatatype.OPT)
AXFR = int(dns.rdatatype.AXFR)
IXFR = int(dns.rdatatype.IXFR)
ANY = int(dns.rdatatype.ANY)
CLASS_IN = int(dns.rdataclass.IN)
CLASS_ANY = int(dns.rdataclass.ANY)

# Header bits (two flag bytes, as 16 bits).
FLAG_QR = int(dns.flags.QR)
FLAG_AA = int(dns.flags.AA)
FLAG_TC = int(dns.flags.TC)
FLAG_RD = int(dns.flags.RD)
FLAG_RA = int(dns.flags.RA)
FLAG_AD = int(dns.flags.AD)
FLAG_CD = int(dns.flags.CD)
OPCODE_MASK = 0x7800
OPCODE_QUERY = int(dns.opcode.QUERY)

NOERROR = int(dns.rcode.NOERROR)
FORMERR = int(dns.rcode.FORMERR)
SERVFAIL = int(dns.rcode.SERVFAIL)
NXDOMAIN = int(dns.rcode.NXDOMAIN)
NOTIMP = int(dns.rcode.NOTIMP)
REFUSED = int(dns.rcode.REFUSED)
# RFC 6891 6.1.3: extended rcode 16 (upper 8 bits in the OPT TTL).
BADVERS = int(dns.rcode.BADVERS)

EDNS_DO = int(dns.flags.DO)

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class FormatError(ValueError):
    """The packet is not a well-formed DNS message (answered with FORMERR)."""


@dataclass(frozen=True, slots=True)
class Edns:
    """The client's OPT record (RFC 6891)."""

    payload: int
    version: int
    do: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: what the slow path needs to route and answer it.

    ``qname_wire`` keeps the client's letter case (echoed back, RFC 5452
    0x20); ``qname`` is the same name lower-cased, as a dnspython name,
    made on demand: routing works on the wire bytes, and a forwarded query
    never needs the dnspython name.
    """

    msg_id: int
    flags: int
    qname_wire: bytes
    qtype: int
    qclass: int
    edns: Edns | None
    question_end: int

    @property
    def qname(self) -> dns.name.Name:
        return name_of(self.qname_wire)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def read_name(data: bytes, offset: int, *, allow_pointers: bool = True) -> tuple[bytes, int]:
    """Reads an uncompressed copy of the name at ``offset``.

    Returns the name in wire form (labels, terminating zero) and the offset
    just past it in the message. Pointers must point backwards (RFC 1035
    4.1.4), which also rules out loops.
    """
    out = bytearray()
    end = -1
    pos = offset
    limit = pos
    while True:
        if pos >= len(data):
            raise FormatError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            out.append(0)
            if end < 0:
                end = pos + 1
            break
        if length & 0xC0 == 0xC0:
            if not allow_pointers:
                raise FormatError("compression pointer in question")
            if pos + 1 >= len(data):
                raise FormatError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= limit:
                raise FormatError("compression pointer does not point backwards")
            if end < 0:
                end = pos + 2
            pos = limit = target
            continue
        if length & 0xC0:
            raise FormatError("unknown label type")
        if pos + 1 + length > len(data):
            raise FormatError("label runs past the end of the message")
        out += data[pos : pos + 1 + length]
        pos += 1 + length
        if len(out) > MAX_NAME_LEN:
            raise FormatError("name longer than 255 bytes")
    if len(out) > MAX_NAME_LEN:
        raise FormatError("name longer than 255 bytes")
    return bytes(out), end


def skip_name(data: bytes, offset: int) -> int:
    """The offset just past the (possibly compressed) name at ``offset``."""
    pos = offset
    n = len(data)
    while True:
        if pos >= n:
            raise FormatError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > n:
                raise FormatError("truncated compression pointer")
            return pos + 2
        if length & 0xC0:
            raise FormatError("unknown label type")
        pos += 1 + length


_V = TypeVar("_V")


def longest_suffix(name: bytes, table: Mapping[bytes, _V]) -> tuple[int, _V] | None:
    """The longest suffix of a lower-case wire ``name`` that is a key of ``table``,
    label by label (never the root), as (where it starts in ``name``, its value)."""
    pos = 0
    while name[pos]:
        found = table.get(name[pos:])
        if found is not None:
            return pos, found
        pos += 1 + name[pos]
    return None


def name_of(qname_wire: bytes) -> dns.name.Name:
    """The dnspython name of an uncompressed wire name, lower-cased.

    Routing and answering compare names label by label (a label may hold
    a dot, ``a\\.b.example.``), which text split on "." cannot do.
    """
    return dns.name.from_wire(qname_wire.lower(), 0)[0]


def to_wire(name: dns.name.Name | str) -> bytes:
    """Uncompressed wire form of a name (text is absolute, escapes allowed)."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    data = name.to_wire()
    assert data is not None  # to_wire() without a file returns the bytes
    return data


def parse_query(data: bytes) -> Query:
    """Parses a query strictly enough to answer it; raises FormatError.

    Accepts one question and at most an OPT record in the additional
    section; answer and authority sections must be empty (RFC 1035 4.1.1
    for a standard query).
    """
    if len(data) < HEADER_LEN:
        raise FormatError("shorter than a DNS header")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError("exactly one question is supported")
    qname_wire, pos = read_name(data, HEADER_LEN, allow_pointers=False)
    if pos + 4 > len(data):
        raise FormatError("question runs past the end of the message")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    question_end = pos
    edns: Edns | None = None
    # Skip any answer/authority records (some clients send them, e.g. with
    # NOTIFY or UPDATE), then look for OPT in the additional section.
    for _ in range(ancount + nscount):
        pos = _skip_rr(data, pos)
    for _ in range(arcount):
        owner = pos
        pos = skip_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("record runs past the end of the message")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > len(data):
            raise FormatError("record data runs past the end of the message")
        if rtype == OPT:
            if edns is not None:
                raise FormatError("more than one OPT record")  # RFC 6891 6.1.1
            if data[owner] != 0:
                raise FormatError("OPT owner is not the root")
            version = (ttl >> 16) & 0xFF
            edns = Edns(
                payload=max(rclass, CLASSIC_UDP_LIMIT), version=version, do=bool(ttl & EDNS_DO)
            )
    if pos != len(data):
        raise FormatError("trailing bytes after the last record")
    return Query(
        msg_id=msg_id,
        flags=flags,
        qname_wire=qname_wire,
        qtype=qtype,
        qclass=qclass,
        edns=edns,
        question_end=question_end,
    )


def _skip_rr(data: bytes, pos: int) -> int:
    pos = skip_name(data, pos)
    if pos + 10 > len(data):
        raise FormatError("record runs past the end of the message")
    rdlen = struct.unpack_from("!H", data, pos + 8)[0]
    pos += 10 + rdlen
    if pos > len(data):
        raise FormatError("record data runs past the end of the message")
    return pos


@dataclass(frozen=True, slots=True)
class RecordSpan:
    """Where one resource record sits in a message."""

    start: int
    end: int
    rtype: int
    ttl_offset: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Layout:
    """The records of a response, by section (used for TTLs and truncation)."""

    question_end: int
    answer: tuple[RecordSpan, ...]
    authority: tuple[RecordSpan, ...]
    additional: tuple[RecordSpan, ...]


def walk_response(data: bytes) -> Layout:
    """Finds every record of a response message; raises FormatError."""
    if len(data) < HEADER_LEN:
        raise FormatError("shorter than a DNS header")
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    pos = HEADER_LEN
    for _ in range(qdcount):
        pos = skip_name(data, pos) + 4
    if pos > len(data):
        raise FormatError("question runs past the end of the message")
    question_end = pos
    sections: list[tuple[RecordSpan, ...]] = []
    for count in (ancount, nscount, arcount):
        spans = []
        for _ in range(count):
            start = pos
            pos = skip_name(data, pos)
            if pos + 10 > len(data):
                raise FormatError("record runs past the end of the message")
            rtype, _rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            ttl_offset = pos + 4
            pos += 10 + rdlen
            if pos > len(data):
                raise FormatError("record data runs past the end of the message")
            spans.append(RecordSpan(start, pos, rtype, ttl_offset, ttl))
        sections.append(tuple(spans))
    return Layout(question_end, sections[0], sections[1], sections[2])


def opt_record(payload: int, do: bool, rcode_high: int = 0) -> bytes:
    """Our OPT record: root owner, our UDP payload size, the DO bit echoed."""
    return b"\x00" + struct.pack("!HHBBHH", OPT, payload, rcode_high, 0, EDNS_DO if do else 0, 0)


def header(msg_id: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return _HEADER.pack(msg_id, flags, qd, an, ns, ar)


def opcode_of(packet: bytes) -> int:
    """The opcode in a packet's header (QUERY for a packet too short to hold one)."""
    if len(packet) < 4:
        return OPCODE_QUERY
    return (((packet[2] << 8) | packet[3]) & OPCODE_MASK) >> 11


def error_response(
    query_bytes: bytes, rcode: int, *, edns_payload: int | None = None, do: bool = False
) -> bytes:
    """A minimal error answer built from whatever of the query is readable.

    Echoes the ID and, when the question parses, the question; used for
    FORMERR/NOTIMP/SERVFAIL/REFUSED without trusting the rest of the packet.
    Written here rather than with dnspython's ``make_response``, which needs a
    parsed query: a FORMERR packet is exactly the one that does not parse.
    ``edns_payload`` adds our OPT record (whether one is due is decided by
    ``gateway.server.rcodes.error_reply``); it carries the upper rcode bits
    and echoes the client's DO bit (``do``, RFC 3225 3) like every answer.
    """
    if len(query_bytes) < 2:
        return b""
    msg_id = struct.unpack_from("!H", query_bytes)[0]
    flags_in = struct.unpack_from("!H", query_bytes, 2)[0] if len(query_bytes) >= 4 else 0
    flags = FLAG_QR | (flags_in & OPCODE_MASK) | (rcode & 0xF)
    if flags_in & OPCODE_MASK == OPCODE_QUERY << 11:
        # RFC 8906 3.1.4 / RFC 1035 4.1.1: RA, RD, CD (and AD, AA) belong
        # to answers to QUERY; other opcodes do not define them.
        flags |= FLAG_RA | (flags_in & (FLAG_RD | FLAG_CD))
    question = b""
    qd = 0
    if len(query_bytes) >= HEADER_LEN and struct.unpack_from("!H", query_bytes, 4)[0] == 1:
        try:
            _, end = read_name(query_bytes, HEADER_LEN, allow_pointers=False)
            if end + 4 <= len(query_bytes):
                question = query_bytes[HEADER_LEN : end + 4]
                qd = 1
        except FormatError:
            pass
    tail = b""
    ar = 0
    if edns_payload is not None:
        tail = opt_record(edns_payload, do, rcode >> 4)
        ar = 1
    return header(msg_id, flags, qd, 0, 0, ar) + question + tail


class MessageWriter:
    """Writes a message with name compression for owner names.

    Record data is passed already encoded (names in it uncompressed, which
    RFC 3597 requires for unknown types and RFC 2782 for SRV targets), so
    one code path serves catalog, zone and synthesised records.
    """

    __slots__ = ("_buf", "_names")

    def __init__(self, question: bytes) -> None:
        # question: qname wire + qtype + qclass, placed right after the header.
        self._buf = bytearray(HEADER_LEN)
        self._buf += question
        self._names: dict[bytes, int] = {}
        self._remember(question[:-4].lower(), HEADER_LEN)

    def _remember(self, name: bytes, offset: int) -> None:
        pos = 0
        while name[pos] and offset + pos < 0x4000:
            self._names.setdefault(name[pos:], offset + pos)
            pos += 1 + name[pos]

    def _name(self, name: bytes) -> bytes:
        """The name as written at the current end: literal labels, then a pointer."""
        key = name.lower()
        base = len(self._buf)
        names = self._names
        pos = 0
        while key[pos]:
            hit = names.get(key[pos:])
            if hit is not None:
                return name[:pos] + struct.pack("!H", 0xC000 | hit)
            if base + pos < 0x4000:  # pointers have 14 bits
                names[key[pos:]] = base + pos
            pos += 1 + key[pos]
        return name

    def __len__(self) -> int:
        return len(self._buf)

    def rollback(self, size: int) -> None:
        """Drops everything written after ``size`` bytes (truncation).

        Names remembered past that point stay in the table; callers stop
        writing names after a rollback, so no pointer can reach them.
        """
        del self._buf[size:]

    def add(self, name: bytes, rtype: int, rclass: int, ttl: int, rdata: bytes) -> None:
        self._buf += self._name(name)
        self._buf += _RR_FIXED.pack(rtype, rclass, ttl, len(rdata))
        self._buf += rdata

    def append_raw(self, data: bytes) -> None:
        self._buf += data

    def finish(self, msg_id: int, flags: int, an: int, ns: int, ar: int) -> bytes:
        _HEADER.pack_into(self._buf, 0, msg_id, flags, 1, an, ns, ar)
        return bytes(self._buf)
