"""The gateway as users meet it: a subprocess answering dig and dnspython.

The gateway runs the embedded default (zones/catalog, zones/home.arpa.zone)
and forwards everything else to a real Knot server on loopback.
"""

from __future__ import annotations

import socket
import struct
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from harness import zone
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from tests.support.dnsclient import dig, dig_short, query, values

WEB = {"192.0.2.11", "192.0.2.12", "192.0.2.13"}


def q(gw: GatewayProcess, name: str, rdtype: str, **kw: object) -> dns.message.Message:
    return query(gw.host, gw.port, name, rdtype, **kw)  # type: ignore[arg-type]


# -- catalog names ---------------------------------------------------------


def test_service_a_records_exclude_critical(gateway: GatewayProcess) -> None:
    assert set(dig_short(gateway.host, gateway.port, "web.service.consul", "A")) == WEB
    # db-1 is critical: only db-2 is returned.
    assert dig_short(gateway.host, gateway.port, "db.service.consul", "A") == ["192.0.2.21"]


def test_datacenter_and_tag_forms(gateway: GatewayProcess) -> None:
    assert set(dig_short(gateway.host, gateway.port, "web.service.dc1.consul")) == WEB
    assert dig_short(gateway.host, gateway.port, "primary.web.service.consul") == ["192.0.2.11"]
    srv = q(gateway, "_web._v1.service.consul", "SRV")
    assert values(srv, "_web._v1.service.consul", "SRV") == {"1 1 8080 web-3.node.dc1.consul."}
    unknown_dc = q(gateway, "web.service.dc9.consul", "A")
    assert unknown_dc.rcode() == dns.rcode.NXDOMAIN


def test_srv_weights_by_health_with_glue(gateway: GatewayProcess) -> None:
    msg = q(gateway, "_web._tcp.service.consul", "SRV")
    assert values(msg, "_web._tcp.service.consul", "SRV") == {
        "1 5 8080 web-1.node.dc1.consul.",  # passing, Weights.Passing 5
        "1 3 8080 web-2.node.dc1.consul.",  # passing, Weights.Passing 3
        "1 1 8080 web-3.node.dc1.consul.",  # warning, Weights.Warning 1
    }
    assert values(msg, "web-1.node.dc1.consul", "A", "additional") == {"192.0.2.11"}
    assert values(msg, "web-1.node.dc1.consul", "TXT", "additional") == {'"rack=r1"'}


def test_service_with_own_address_uses_addr_target(gateway: GatewayProcess) -> None:
    msg = q(gateway, "api.service.consul", "SRV")
    targets = {rr.target.to_text() for rr in msg.answer[0]}
    assert targets == {"20010db8000000000000000000000011.addr.dc1.consul.",
                       "c0000216.addr.dc1.consul."}  # fmt: skip
    assert values(msg, "c0000216.addr.dc1.consul", "A", "additional") == {"192.0.2.22"}
    assert set(dig_short(gateway.host, gateway.port, "api.service.consul", "AAAA")) == {
        "2001:db8::11"
    }


def test_nxdomain_and_nodata_carry_the_soa(gateway: GatewayProcess) -> None:
    missing = q(gateway, "nope.service.consul", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority and missing.authority[0].rdtype == dns.rdatatype.SOA
    # web is IPv4-only: AAAA is NODATA (NOERROR, no answer, SOA), which keeps
    # getaddrinfo() from waiting on a timeout.
    nodata = q(gateway, "web.service.consul", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    assert nodata.flags & dns.flags.AA


def test_names_are_case_insensitive_and_case_is_echoed(gateway: GatewayProcess) -> None:
    msg = q(gateway, "WeB.SeRvIcE.CoNsUl", "A")
    assert msg.question[0].name.to_text() == "WeB.SeRvIcE.CoNsUl."
    assert {rr.address for rr in msg.answer[0]} == WEB
    # The same name, other case: answered from the prepared template, case echoed.
    again = q(gateway, "web.SERVICE.consul", "A")
    assert again.question[0].name.to_text() == "web.SERVICE.consul."


def test_any_is_answered_minimally(gateway: GatewayProcess) -> None:
    msg = q(gateway, "web.service.consul", "ANY")
    assert msg.rcode() == dns.rcode.NOERROR
    assert {rr.rdtype for rr in msg.answer} == {dns.rdatatype.A}


def test_node_addr_and_ptr(gateway: GatewayProcess) -> None:
    assert dig_short(gateway.host, gateway.port, "web-2.node.consul") == ["192.0.2.12"]
    assert dig_short(gateway.host, gateway.port, "web-2.node.consul", "TXT") == ['"rack=r2"']
    assert dig_short(gateway.host, gateway.port, "c000020b.addr.consul") == ["192.0.2.11"]
    assert dig_short(gateway.host, gateway.port, "-x", "192.0.2.12") == ["web-2.node.dc1.consul."]


def test_edns_is_echoed_only_when_sent(gateway: GatewayProcess) -> None:
    with_edns = q(gateway, "web.service.consul", "A", edns=True)
    assert with_edns.edns == 0 and with_edns.payload == 1232
    without = q(gateway, "web.service.consul", "A", edns=False)
    assert without.edns == -1


def test_tcp_several_queries_on_one_connection(gateway: GatewayProcess) -> None:
    names = ["web.service.consul", "db.service.consul", "www.example.test"]
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        wires = []
        for i, name in enumerate(names):
            msg = dns.message.make_query(name, "A")
            msg.id = 1000 + i
            wires.append(msg.to_wire())
        # Pipelined: all three before reading any answer (RFC 7766 6.2.1.1).
        sock.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))
        answers = {}
        for _ in names:
            size = struct.unpack("!H", _recv_exactly(sock, 2))[0]
            reply = dns.message.from_wire(_recv_exactly(sock, size))
            answers[reply.id] = reply
    assert {rr.address for rr in answers[1000].answer[0]} == WEB
    assert {rr.address for rr in answers[1001].answer[0]} == {"192.0.2.21"}
    assert {rr.address for rr in answers[1002].answer[0]} == {zone.WWW_A}


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def test_bad_packets_get_formerr_or_nothing_and_the_server_lives(gateway: GatewayProcess) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    good = dns.message.make_query("web.service.consul", "A").to_wire()
    bad_packets = [
        b"",
        b"\x12",
        b"\x12\x34\x01\x00\x00\x01",  # header cut short
        good[:-3],  # question cut short
        good + b"\x00\x01\x02",  # trailing bytes
        good[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop in the question
        good[:4] + b"\x00\x02" + good[6:],  # two questions announced, one sent
        bytes(range(256)),
    ]
    try:
        for packet in bad_packets:
            sock.sendto(packet, (gateway.host, gateway.port))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue  # dropped: allowed for packets without a usable header
            assert len(data) >= 12
            assert data[3] & 0x0F == dns.rcode.FORMERR, packet
    finally:
        sock.close()
    assert set(dig_short(gateway.host, gateway.port, "web.service.consul")) == WEB


def test_other_opcodes_get_notimp(gateway: GatewayProcess) -> None:
    msg = dns.message.make_query("web.service.consul", "SOA")
    msg.set_opcode(dns.opcode.NOTIFY)
    reply = dns.query.udp(msg, gateway.host, port=gateway.port, timeout=3)
    assert reply.rcode() == dns.rcode.NOTIMP


def test_edns_version_1_gets_badvers(gateway: GatewayProcess) -> None:
    msg = dns.message.make_query("web.service.consul", "A", use_edns=1)
    reply = dns.query.udp(msg, gateway.host, port=gateway.port, timeout=3)
    assert reply.rcode() == dns.rcode.BADVERS


# -- local zones -----------------------------------------------------------


def test_local_zone_cname_wildcard_and_negative(gateway: GatewayProcess) -> None:
    assert dig_short(gateway.host, gateway.port, "nas.home.arpa") == [
        "files.home.arpa.",
        "192.0.2.31",
    ]
    assert dig_short(gateway.host, gateway.port, "anything.dev.home.arpa") == ["192.0.2.40"]
    missing = q(gateway, "nothing.home.arpa", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    assert missing.authority[0].ttl == 60  # min(SOA TTL 300, MINIMUM 60), RFC 2308
    assert q(gateway, "router.home.arpa", "MX").rcode() == dns.rcode.NOERROR


# -- forwarding and the cache -------------------------------------------------


def test_forwarded_names(gateway: GatewayProcess) -> None:
    assert dig_short(gateway.host, gateway.port, "www.example.test") == [zone.WWW_A]
    assert dig_short(gateway.host, gateway.port, "www.example.test", "AAAA") == [zone.WWW_AAAA]
    assert dig_short(gateway.host, gateway.port, "example.test", "MX") == ["10 mail.example.test."]
    chain = dig_short(gateway.host, gateway.port, "alias.example.test")
    assert chain == [zone.ALIAS2, zone.WWW, zone.WWW_A]
    nx = q(gateway, zone.MISSING, "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = q(gateway, zone.V4ONLY, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    assert not nodata.flags & dns.flags.AA  # relayed, not authored by us


def test_large_forwarded_answer_truncates_over_udp_and_is_whole_over_tcp(
    gateway: GatewayProcess,
) -> None:
    udp = q(gateway, zone.BIGTXT, "TXT", edns=False)
    assert udp.flags & dns.flags.TC
    tcp = q(gateway, zone.BIGTXT, "TXT", tcp=True, edns=False)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == len(zone.BIGTXT_STRINGS)
    out = dig(gateway.host, gateway.port, "+noedns", zone.BIGTXT, "TXT")
    assert "Truncated, retrying in TCP mode" in out or "flags: qr tc" not in out
    assert out.count('"') >= 2 * len(zone.BIGTXT_STRINGS)


def test_cache_answers_repeats_and_counts_ttl_down(
    gateway: GatewayProcess, knot: KnotUpstream
) -> None:
    first = q(gateway, zone.MAIL, "A")
    before = knot.query_count()
    time.sleep(1.1)
    repeats = [q(gateway, zone.MAIL, "A") for _ in range(20)]
    assert knot.query_count() == before  # all from the cache
    assert repeats[-1].answer[0].ttl < first.answer[0].ttl


def test_do_bit_answers_are_cached_apart(gateway: GatewayProcess, knot: KnotUpstream) -> None:
    plain = dns.message.make_query("ns1.example.test", "A", use_edns=0)
    with_do = dns.message.make_query("ns1.example.test", "A", use_edns=0, want_dnssec=True)
    dns.query.udp(plain, gateway.host, port=gateway.port, timeout=3)
    before = knot.query_count()
    reply = dns.query.udp(with_do, gateway.host, port=gateway.port, timeout=3)
    assert knot.query_count() == before + 1  # not served from the non-DO entry
    assert reply.ednsflags & dns.flags.DO


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "SRV"])
def test_dig_over_tcp(gateway: GatewayProcess, rdtype: str) -> None:
    out = dig(gateway.host, gateway.port, "+tcp", "web.service.consul", rdtype)
    assert "status: NOERROR" in out
