"""The strict walk of upstream messages: whole messages pass, anything else is a FormatError,
and whatever passes (made into a template) parses with dnspython."""

from __future__ import annotations

import base64
import random
import struct

import dns.exception
import dns.message
import dns.rdataclass
import dns.rrset
import pytest

from gateway.cache.store import make_template
from gateway.dns import codec, verify, wire

CHECKED_TYPES = {
    wire.A, wire.AAAA, wire.NS, wire.CNAME, wire.SOA, wire.PTR, wire.MX, wire.SRV, 39,
}  # fmt: skip


def message(*, edns: bool = True, txt: bool = True) -> bytes:
    """A reply with every kind of record the walk checks, compressed by dnspython."""
    q = dns.message.make_query("www.example.com.", "A", use_edns=0 if edns else False)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "CNAME", "web.example.com."))
    r.answer.append(dns.rrset.from_text("web.example.com.", 60, "IN", "A", "192.0.2.1"))
    r.answer.append(dns.rrset.from_text("web.example.com.", 60, "IN", "AAAA", "2001:db8::1"))
    if txt:  # a type whose data is not checked: walked over as it is
        r.answer.append(dns.rrset.from_text("web.example.com.", 60, "IN", "TXT", '"hello"'))
    r.authority.append(dns.rrset.from_text("example.com.", 60, "IN", "NS", "ns.example.com."))
    r.authority.append(
        dns.rrset.from_text(
            "example.com.", 60, "IN", "SOA", "ns.example.com. h.example.com. 1 2 3 4 5"
        )
    )
    r.additional.append(dns.rrset.from_text("example.com.", 60, "IN", "MX", "10 mx.example.com."))
    r.additional.append(
        dns.rrset.from_text("_s._tcp.example.com.", 60, "IN", "SRV", "1 2 3 web.example.com.")
    )
    r.additional.append(dns.rrset.from_text("x.example.com.", 60, "IN", "DNAME", "example.com."))
    r.additional.append(
        dns.rrset.from_text("1.2.0.192.in-addr.arpa.", 60, "IN", "PTR", "web.example.com.")
    )
    return r.to_wire()


def test_a_whole_message_has_the_same_layout_as_the_plain_walk() -> None:
    for edns in (True, False):
        data = message(edns=edns)
        assert verify.walk_strict(data) == wire.walk_response(data)


def header_counts(data: bytes, an: int, ns: int, ar: int) -> bytes:
    return data[:6] + struct.pack("!HHH", an, ns, ar) + data[12:]


QUESTION = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
HEAD = bytes.fromhex("1234 8180 0001 0000 0000 0000")


def rr(owner: bytes, rtype: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, 60, len(rdata)) + rdata


def build(*records: bytes, an: int | None = None, ar: int = 0) -> bytes:
    count = len(records) - ar if an is None else an
    return HEAD[:6] + struct.pack("!HHH", count, 0, ar) + QUESTION + b"".join(records)


PTR_Q = b"\xc0\x0c"  # the question's name
OPT = rr(b"\x00", wire.OPT, b"", rclass=1232)

BAD = {
    "trailing bytes": message() + b"\x00",
    "trailing bytes without OPT": message(edns=False) + b"junk",
    "record cut short": message()[:-3],
    "header only, counts claim more": HEAD[:6] + b"\x00\x01\x00\x00\x00\x00",
    "pointer forwards": build(rr(b"\xc0\x40", wire.A, b"\x01\x02\x03\x04")),
    "pointer into the header": build(rr(b"\xc0\x03", wire.A, b"\x01\x02\x03\x04")),
    "pointer to itself": build(rr(b"\xc0\x21", wire.A, b"\x01\x02\x03\x04")),
    "pointer loop via the question": HEAD[:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\x0c"
    + b"\x00\x01\x00\x01",
    "unknown label type": build(rr(b"\x41abc\x00", wire.A, b"\x01\x02\x03\x04")),
    "name over 255 bytes": build(rr(b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
                                    + b"\x3f" + b"d" * 63 + PTR_Q, wire.A, b"\x01\x02\x03\x04")),
    "A of five bytes": build(rr(PTR_Q, wire.A, b"\x01\x02\x03\x04\x05")),
    "AAAA of four bytes": build(rr(PTR_Q, wire.AAAA, b"\x01\x02\x03\x04")),
    "CNAME with a byte after its name": build(rr(PTR_Q, wire.CNAME, b"\x01a\x00\x00")),
    "CNAME pointing forwards": build(rr(PTR_Q, wire.CNAME, b"\xc0\x50")),
    "CNAME name past its data": build(
        rr(PTR_Q, wire.CNAME, b"\x05ab"), rr(PTR_Q, wire.A, b"\x01\x02\x03\x04")
    ),
    "SOA without its numbers": build(rr(PTR_Q, wire.SOA, PTR_Q + PTR_Q + b"\x00" * 16)),
    "MX without a name": build(rr(PTR_Q, wire.MX, b"\x00\x0a")),
    "OPT in the answer section": build(OPT),
    "two OPT records": build(OPT, OPT, ar=2),
    "OPT owned by a name": build(rr(PTR_Q, wire.OPT, b"", rclass=1232), ar=1),
    "OPT option past its record": build(rr(b"\x00", wire.OPT, b"\x00\x0a\x00\x08abcd", 1232), ar=1),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_what_is_not_a_whole_message_is_refused(case: str) -> None:
    with pytest.raises(wire.FormatError):
        verify.walk_strict(BAD[case])


def test_a_built_message_passes() -> None:
    good = build(
        rr(PTR_Q, wire.CNAME, b"\x03web" + PTR_Q[:1] + b"\x10"),  # web.example.com via pointer
        rr(b"\x03web\xc0\x10", wire.A, b"\x01\x02\x03\x04"),
        rr(b"\x00", wire.OPT, b"\xfd\xe9\x00\x04abcd", 1232),  # a local-use option
        ar=1,
    )
    assert dns.message.from_wire(good).answer
    layout = verify.walk_strict(good)
    assert [r.rtype for r in layout.answer] == [wire.CNAME, wire.A]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        how = rng.random()
        at = rng.randrange(len(buf))
        if how < 0.5:
            buf[at] = rng.randrange(256)
        elif how < 0.65:
            buf[at] = 0xC0 | rng.randrange(4)  # a compression pointer somewhere
            if at + 1 < len(buf):
                buf[at + 1] = rng.randrange(256)
        elif how < 0.8:
            del buf[at:]
            buf += b"\x00" * rng.randrange(3)
        elif how < 0.9:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        else:
            del buf[at : at + rng.randint(1, 3)]
    return bytes(buf)


def checked_types_only(layout: wire.Layout, data: bytes) -> bool:
    """Whether every record is one whose data the walk checks, in class IN."""
    for r in (*layout.answer, *layout.authority, *layout.additional):
        if r.rtype == wire.OPT:
            continue  # templates carry our OPT, not the upstream's
        name_end = wire.skip_name(data, r.start)
        rclass = struct.unpack_from("!H", data, name_end + 2)[0]
        if r.rtype not in CHECKED_TYPES or rclass != dns.rdataclass.IN:
            return False
    return True


def test_whatever_passes_becomes_a_template_that_parses_and_truncates() -> None:
    """5,000 mutations of whole messages: a template made from any that passes is a
    message dnspython reads, and truncating it to 512 bytes never fails."""
    rng = random.Random(9)
    bases = [message(edns=edns, txt=txt) for edns in (True, False) for txt in (True, False)]
    passed = parsed = 0
    for _ in range(5_000):
        data = mutate(rng.choice(bases), rng)
        try:
            layout = verify.walk_strict(data)
        except wire.FormatError:
            continue
        passed += 1
        for edns in (None, wire.Edns(1232, 0, False)):
            made = make_template(data, client_edns=edns, payload=1232)
            if made is None:
                continue
            template, _ = made
            wire.walk_response(codec.truncate(template, wire.CLASSIC_UDP_LIMIT))
            if checked_types_only(layout, data):
                try:
                    dns.message.from_wire(template)
                except dns.exception.DNSException as exc:
                    raise AssertionError(f"{data.hex()} passed, does not parse: {exc!r}") from exc
                parsed += 1
    assert passed > 500 and parsed > 150  # the mutations reach both sides of the check


@pytest.mark.parametrize("rtype", ["TXT", "CAA", "HINFO"])
def test_record_data_of_other_types_must_decode(rtype: str) -> None:
    """A TXT string longer than its record was cached and relayed (fuzz target upstream)."""
    text = {"TXT": '"hello"', "CAA": '0 issue "ca.example"', "HINFO": '"cpu" "os"'}[rtype]
    q = dns.message.make_query("t.example.", rtype)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("t.example.", 60, "IN", rtype, text))
    good = r.to_wire()
    verify.walk_strict(good)
    # The first inner length byte of the record data claims more than there is.
    rdata_at = len(good) - len(r.answer[0][0].to_wire())
    bad = bytearray(good)
    bad[rdata_at] = 0xFF if rtype != "CAA" else bad[rdata_at]
    if rtype == "CAA":
        bad[rdata_at + 1] = 0xFF  # the tag length
    with pytest.raises(wire.FormatError, match="does not decode"):
        verify.walk_strict(bytes(bad))


def test_an_a_record_of_another_class_is_judged_as_that_class() -> None:
    """A CHAOS A record holding a compression pointer was relayed as four address
    bytes; clients refuse it (fuzz target upstream, 2026-11-26)."""
    reply = base64.b64decode(
        "AwEAAIGAAAEAAgAAAAEDYmlnB2V4YW1wbGUDY29tAAAQAAHADAAFAAEAAAA8AAkGdGFyZ2V0wBDALQAB"
        "AAMAAAA8AATAAAIJAAApIAAAAAAAAAA="
    )[2:]  # the fuzz input starts with the target's two control bytes
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(reply)
    with pytest.raises(wire.FormatError, match="does not decode"):
        verify.walk_strict(reply)
    # The same record in class IN is an address and passes.
    in_class = bytearray(reply)
    in_class[reply.index(bytes.fromhex("c02d00010003")) + 5] = 1
    verify.walk_strict(bytes(in_class))
    dns.message.from_wire(bytes(in_class))
