"""Issue 8 on the request path: hosts files, CHAOS, and RFC 8906's corners.

Driven with plain bytes through the resolver (fake forwarder, no sockets).
"""

from __future__ import annotations

import json
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest

from gateway.catalog import static as static_catalog
from gateway.catalog.source import StaticSource
from gateway.hosts.parse import parse
from gateway.hosts.table import HostsTable
from gateway.options import Config, Endpoint
from gateway.server.chaos import CLASS_HS
from tests.unit.helpers import query_bytes
from tests.unit.server.test_resolver import ask, make, upstream_reply

CATALOG_ADDRESS_REVERSE = "11.2.0.192.in-addr.arpa"  # web's instance in zones/catalog


def chaos_query(name: str, rdtype: str = "TXT", rdclass: int = dns.rdataclass.CH) -> bytes:
    msg = dns.message.make_query(name, rdtype, rdclass=dns.rdataclass.RdataClass.make(rdclass))
    return msg.to_wire()


def reply_of(packets: list[bytes]) -> dns.message.Message:
    assert len(packets) == 1
    return dns.message.from_wire(packets[0])


@pytest.mark.parametrize("name", ["version.bind", "VERSION.SERVER", "hostname.bind", "id.server"])
def test_chaos_names_are_answered_here_never_forwarded(name: str) -> None:
    resolver, forwarder, _ = make()
    reply = reply_of(ask(resolver, chaos_query(name)))
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (rrset,) = reply.answer
    assert rrset.rdclass == dns.rdataclass.CH
    text = b"".join(rrset[0].strings).decode()
    if "version" in name.lower():
        assert text.startswith("consul-dns-gateway ")
    else:
        assert text  # the machine's host name
    assert forwarder.calls == []


def test_other_chaos_and_hesiod_questions_are_refused_never_forwarded() -> None:
    resolver, forwarder, _ = make()
    for packet in (
        chaos_query("authors.bind"),
        chaos_query("www.example.com", "A"),
        chaos_query("version.bind", "TXT", CLASS_HS),
    ):
        assert reply_of(ask(resolver, packet)).rcode() == dns.rcode.REFUSED
    nodata = reply_of(ask(resolver, chaos_query("version.bind", "A")))
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    below = reply_of(ask(resolver, chaos_query("x.version.bind")))
    assert below.rcode() == dns.rcode.NXDOMAIN and below.authority
    assert forwarder.calls == []


def test_chaos_refuse() -> None:
    resolver, forwarder, _ = make(Config(upstream=(), chaos="refuse"))
    for name in ("version.bind", "hostname.bind", "id.server"):
        assert reply_of(ask(resolver, chaos_query(name))).rcode() == dns.rcode.REFUSED
    assert forwarder.calls == []


def test_unknown_opcode_is_notimp_even_without_a_question() -> None:
    resolver, _, _ = make()
    # Opcode 15 (unassigned), RD and CD set, QDCOUNT 0.
    packet = bytes((0x12, 0x34, 0x79, 0x10)) + b"\x00" * 8
    reply = reply_of(ask(resolver, packet))
    assert reply.rcode() == dns.rcode.NOTIMP and reply.opcode() == 15
    # RFC 8906: RA, RD, CD, AD, AA only in answers to QUERY.
    assert reply.flags & ~dns.flags.QR & 0x87F0 == 0
    notify = bytearray(query_bytes("web.service.consul"))
    notify[2] = 0x21  # NOTIFY with RD
    reply = reply_of(ask(resolver, bytes(notify)))
    assert reply.rcode() == dns.rcode.NOTIMP
    assert not reply.flags & (dns.flags.RA | dns.flags.RD | dns.flags.CD | dns.flags.AA)
    # A QUERY without a question is still FORMERR, with RA and RD.
    formerr = reply_of(ask(resolver, bytes((0, 1, 1, 0)) + b"\x00" * 8))
    assert formerr.rcode() == dns.rcode.FORMERR and formerr.flags & dns.flags.RA


def test_error_replies_echo_the_do_bit() -> None:
    resolver, _, _ = make()
    for packet, rcode in (
        (query_bytes("home.arpa", "AXFR", edns=0, do=True), dns.rcode.REFUSED),
        (chaos_query("authors.bind"), dns.rcode.REFUSED),
    ):
        msg = dns.message.from_wire(packet)
        msg.use_edns(0, dns.flags.DO, 1232)
        reply = reply_of(ask(resolver, msg.to_wire()))
        assert reply.rcode() == rcode and reply.ednsflags & dns.flags.DO
    badvers = reply_of(ask(resolver, query_bytes("web.service.consul", edns=1, do=True)))
    assert badvers.rcode() == dns.rcode.BADVERS and badvers.ednsflags & dns.flags.DO
    plain = reply_of(ask(resolver, query_bytes("home.arpa", "AXFR", edns=0)))
    assert not plain.ednsflags & dns.flags.DO


def test_non_ptr_at_a_catalog_reverse_name_is_forwarded() -> None:
    resolver, forwarder, _ = make()
    ptr = reply_of(ask(resolver, query_bytes(CATALOG_ADDRESS_REVERSE, "PTR")))
    assert ptr.answer and forwarder.calls == []
    assert ask(resolver, query_bytes(CATALOG_ADDRESS_REVERSE, "TXT")) == []  # waits upstream
    assert len(forwarder.calls) == 1


def test_the_apex_ns_target_has_an_address() -> None:
    config = Config(upstream=(), listen=(Endpoint("127.0.0.1", 53), Endpoint("::", 53)))
    resolver, _, _ = make(config)
    ns = reply_of(ask(resolver, query_bytes("consul", "NS")))
    target = ns.answer[0][0].target.to_text()
    assert target == "ns.consul."
    assert {rr.rdtype for rr in ns.additional} == {dns.rdatatype.A, dns.rdatatype.AAAA}
    a = reply_of(ask(resolver, query_bytes(target, "A")))
    assert a.rcode() == dns.rcode.NOERROR and a.answer[0][0].address == "127.0.0.1"
    aaaa = reply_of(ask(resolver, query_bytes(target, "AAAA")))
    assert aaaa.answer[0][0].address == "::1"  # the wildcard listener's loopback


def hosts(text: str) -> HostsTable:
    lines, _ = parse(text, "test")
    return HostsTable(lines, ttl=0)


def test_hosts_come_before_forwarding_and_localhost_is_never_forwarded() -> None:
    resolver, forwarder, _ = make()
    resolver.replace_hosts(hosts("192.0.2.50 printer\n"))
    assert reply_of(ask(resolver, query_bytes("PRINTER"))).answer[0][0].address == "192.0.2.50"
    for name, rdtype in (("localhost", "A"), ("x.localhost", "AAAA"),
                         ("1.0.0.127.in-addr.arpa", "PTR"), ("localhost", "MX")):  # fmt: skip
        assert reply_of(ask(resolver, query_bytes(name, rdtype))).rcode() == dns.rcode.NOERROR
    assert forwarder.calls == []
    # A prepared hosts answer says where it came from (--log-queries).
    assert resolver.prepared_source(query_bytes("printer"), False) == "hosts"


def test_a_new_hosts_name_replaces_a_cached_forwarded_answer() -> None:
    resolver, forwarder, _ = make()
    ask(resolver, query_bytes("nas.example"))
    question, _, done = forwarder.calls[0]
    done(upstream_reply(question, "192.0.2.80"))
    assert reply_of(ask(resolver, query_bytes("nas.example"))).answer[0][0].address == "192.0.2.80"
    assert resolver.prepared_source(query_bytes("nas.example"), False) == "cache"
    resolver.replace_hosts(hosts("192.0.2.99 nas.example\n"))
    assert reply_of(ask(resolver, query_bytes("nas.example"))).answer[0][0].address == "192.0.2.99"
    # Removed again: forwarded, not a stale hosts answer from the prepared table.
    resolver.replace_hosts(hosts(""))
    assert ask(resolver, query_bytes("nas.example")) == []
    assert len(forwarder.calls) == 2


def test_a_catalog_address_on_loopback_keeps_its_ptr_and_other_types_stay_local(
    tmp_path: Path,
) -> None:
    """A Consul dev agent's node is at 127.0.0.1: PTR names it as Consul does;
    other types there are the loopback zone's, never forwarded."""
    (tmp_path / "dev.json").write_text(
        json.dumps({"node_name": "dev1", "advertise_addr": "127.0.0.1",
                    "services": [{"name": "web", "port": 80}]})
    )  # fmt: skip
    resolver, forwarder, _ = make()
    resolver._source = StaticSource(static_catalog.load(tmp_path, "dc1"))
    ptr = reply_of(ask(resolver, query_bytes("1.0.0.127.in-addr.arpa", "PTR")))
    assert [rd.to_text() for rd in ptr.answer[0]] == ["dev1.node.dc1.consul."]
    other = reply_of(ask(resolver, query_bytes("1.0.0.127.in-addr.arpa", "TXT")))
    assert other.rcode() == dns.rcode.NOERROR and not other.answer and other.authority
    assert forwarder.calls == []
