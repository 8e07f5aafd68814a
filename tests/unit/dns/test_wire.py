from __future__ import annotations

import dns.message
import dns.name
import pytest

from gateway.dns import wire
from tests.unit.helpers import query_bytes


def test_parse_plain_query() -> None:
    q = wire.parse_query(query_bytes("WeB.Service.Consul", "SRV"))
    assert q.qname == dns.name.from_text("web.service.consul")
    assert q.qname.to_text() == "web.service.consul."  # lower-cased
    assert q.qname_wire == b"\x03WeB\x07Service\x06Consul\x00"
    assert (q.qtype, q.qclass, q.edns, q.msg_id) == (wire.SRV, wire.CLASS_IN, None, 4660)


def test_parse_edns_payload_and_do() -> None:
    q = wire.parse_query(query_bytes("a.b", edns=0, do=True))
    assert q.edns == wire.Edns(payload=1232, version=0, do=True)


BAD = [
    (b"", "shorter than a DNS header"),
    (b"\x00" * 11, "shorter than a DNS header"),
    (b"\x00\x01\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "a response"),
    (b"\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "one question"),
    (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "pointer"),
    (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab\x00\x01\x00\x01", "past the end"),
    (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01", "past the end"),
    (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\xff", "trailing"),
    (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41a\x00\x00\x01\x00\x01", "label type"),
]


@pytest.mark.parametrize(("packet", "why"), BAD)
def test_parse_rejects(packet: bytes, why: str) -> None:
    with pytest.raises(wire.FormatError, match=why):
        wire.parse_query(packet)


def test_name_longer_than_255_is_rejected() -> None:
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"
    packet = b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    with pytest.raises(wire.FormatError, match="255"):
        wire.parse_query(packet)


def test_two_opt_records_are_formerr() -> None:
    one = query_bytes("a.b", edns=0)
    opt = one[-11:]
    two = one[:10] + b"\x00\x02" + one[12:] + opt
    with pytest.raises(wire.FormatError, match="more than one OPT"):
        wire.parse_query(two)


def test_read_name_follows_backward_pointers_only() -> None:
    msg = b"\x00" * 12 + b"\x03abc\x00" + b"\x01x\xc0\x0c"
    assert wire.read_name(msg, 17) == (b"\x01x\x03abc\x00", 21)
    with pytest.raises(wire.FormatError, match="backwards"):
        wire.read_name(b"\x00" * 12 + b"\xc0\x0e\xc0\x0c", 12)


def test_error_response_echoes_id_question_and_rd() -> None:
    packet = query_bytes("x.consul", "A")
    reply = dns.message.from_wire(wire.error_response(packet, wire.SERVFAIL))
    assert reply.id == 4660 and reply.rcode() == wire.SERVFAIL
    assert reply.question[0].name.to_text() == "x.consul."
    assert wire.error_response(b"\x01", wire.FORMERR) == b""


def test_error_response_with_extended_rcode_has_opt() -> None:
    reply = dns.message.from_wire(
        wire.error_response(query_bytes("x", edns=1), wire.BADVERS, edns_payload=1232)
    )
    assert reply.rcode() == wire.BADVERS


def test_writer_compresses_owner_names_against_the_question() -> None:
    question = wire.to_wire("web.service.consul") + b"\x00\x01\x00\x01"
    w = wire.MessageWriter(question)
    w.add(wire.to_wire("web.service.consul"), wire.A, 1, 0, bytes(4))
    w.add(wire.to_wire("n1.node.dc1.consul"), wire.A, 1, 0, bytes(4))
    w.add(wire.to_wire("N1.node.dc1.consul"), wire.A, 1, 0, bytes([1, 2, 3, 4]))
    msg = w.finish(7, wire.FLAG_QR, 3, 0, 0)
    parsed = dns.message.from_wire(msg)
    names = [rrset.name.to_text() for rrset in parsed.answer]
    assert names == ["web.service.consul.", "n1.node.dc1.consul."]
    assert len(parsed.answer[1]) == 2
    # Second owner: "n1.node.dc1" literal + pointer to "consul"; third: a pointer.
    assert msg.count(b"\xc0\x0c") == 1 and len(msg) < 12 + 24 + 16 + 31 + 16


def test_walk_response_finds_every_record() -> None:
    msg = dns.message.make_response(dns.message.make_query("a.example", "A", use_edns=0))
    msg.answer.append(dns.rrset.from_text("a.example.", 30, "IN", "A", "192.0.2.1", "192.0.2.2"))
    layout = wire.walk_response(msg.to_wire())
    assert [r.ttl for r in layout.answer] == [30, 30]
    assert [r.rtype for r in layout.additional] == [wire.OPT]
