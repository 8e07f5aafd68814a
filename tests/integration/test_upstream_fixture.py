"""The Knot/dnsmasq fixtures behave the way the gateway tests rely on."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.rcode
import pytest

from harness import zone as z
from harness.dnsmasq import DnsmasqServer
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.process import ServerStartError
from tests.support.dnsclient import dig_short, query, rrset, values


def test_address_attributes(knot: KnotUpstream) -> None:
    assert knot.host == "127.0.0.1"
    assert knot.address == f"127.0.0.1:{knot.port}"


def test_www_a_and_aaaa(knot: KnotUpstream) -> None:
    a = query(knot.host, knot.port, z.WWW, "A")
    assert a.rcode() == dns.rcode.NOERROR
    assert a.flags & dns.flags.AA
    assert values(a, z.WWW, "A") == {z.WWW_A}
    found = rrset(a, z.WWW, "A")
    assert found is not None and found.ttl == z.WWW_TTL

    aaaa = query(knot.host, knot.port, z.WWW, "AAAA", tcp=True)
    assert values(aaaa, z.WWW, "AAAA") == {z.WWW_AAAA}


def test_mx_and_mail(knot: KnotUpstream) -> None:
    mx = query(knot.host, knot.port, z.ZONE, "MX")
    assert values(mx, z.ZONE, "MX") == {f"{z.MX_PREFERENCE} {z.MAIL}"}
    assert values(query(knot.host, knot.port, z.MAIL, "A"), z.MAIL, "A") == {z.MAIL_A}


def test_cname_chain_is_followed_in_zone(knot: KnotUpstream) -> None:
    msg = query(knot.host, knot.port, z.ALIAS, "A")
    assert msg.rcode() == dns.rcode.NOERROR
    assert values(msg, z.ALIAS, "CNAME") == {z.ALIAS2}
    assert values(msg, z.ALIAS2, "CNAME") == {z.WWW}
    assert values(msg, z.WWW, "A") == {z.WWW_A}


def test_bigtxt_truncates_without_edns_and_is_whole_over_tcp(knot: KnotUpstream) -> None:
    expected = {f'"{s}"' for s in z.BIGTXT_STRINGS}

    plain = query(knot.host, knot.port, z.BIGTXT, "TXT", edns=False)
    assert plain.flags & dns.flags.TC

    with_edns = query(knot.host, knot.port, z.BIGTXT, "TXT", payload=1232)
    assert not with_edns.flags & dns.flags.TC
    assert values(with_edns, z.BIGTXT, "TXT") == expected
    assert len(with_edns.to_wire()) > 512

    over_tcp = query(knot.host, knot.port, z.BIGTXT, "TXT", tcp=True, edns=False)
    assert not over_tcp.flags & dns.flags.TC
    assert values(over_tcp, z.BIGTXT, "TXT") == expected


def test_nodata_for_v4only_aaaa(knot: KnotUpstream) -> None:
    msg = query(knot.host, knot.port, z.V4ONLY, "AAAA")
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []
    soa = rrset(msg, z.ZONE, "SOA", "authority")
    assert soa is not None
    assert soa.ttl == z.NEGATIVE_TTL


def test_nxdomain_with_soa(knot: KnotUpstream) -> None:
    msg = query(knot.host, knot.port, z.MISSING, "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.answer == []
    soa = rrset(msg, z.ZONE, "SOA", "authority")
    assert soa is not None
    assert soa.ttl == z.NEGATIVE_TTL
    assert soa[0].minimum == z.SOA_MINIMUM


def test_short_ttl(knot: KnotUpstream) -> None:
    found = rrset(query(knot.host, knot.port, z.SHORT, "A"), z.SHORT, "A")
    assert found is not None
    assert found.ttl == z.SHORT_TTL
    assert {rd.to_text() for rd in found} == {z.SHORT_A}


def test_query_count(knot: KnotUpstream) -> None:
    before = knot.query_count()
    for _ in range(3):
        query(knot.host, knot.port, z.WWW, "A")
    query(knot.host, knot.port, z.WWW, "A", tcp=True)
    assert knot.query_count() == before + 4


def test_kill_then_restart_on_same_port() -> None:
    with KnotUpstream() as knot:
        port = knot.port
        knot.kill()
        assert not knot.running
        with pytest.raises(dns.exception.Timeout):
            query(knot.host, port, z.WWW, "A", timeout=0.5)

        knot.restart()
        assert knot.port == port
        assert values(query(knot.host, port, z.WWW, "A"), z.WWW, "A") == {z.WWW_A}
        assert knot.stop() == 0
    assert not knot.workdir.exists()


def test_dnsmasq_forwards_to_knot(knot: KnotUpstream) -> None:
    servers = [f"/{z.ZONE.rstrip('.')}/{knot.host}#{knot.port}"]
    with DnsmasqServer(servers, cache_size=100) as dnsmasq:
        assert dig_short(dnsmasq.host, dnsmasq.port, z.WWW, "A") == [z.WWW_A]
        assert dig_short(dnsmasq.host, dnsmasq.port, z.ALIAS, "A")[-1] == z.WWW_A
        # Answered from dnsmasq's cache the second time, so still correct
        # with a TTL no larger than the zone's.
        cached = query(dnsmasq.host, dnsmasq.port, z.WWW, "A")
        found = rrset(cached, z.WWW, "A")
        assert found is not None and 0 < found.ttl <= z.WWW_TTL


def test_dnsmasq_rejects_non_loopback_upstream() -> None:
    with pytest.raises(ValueError):
        DnsmasqServer(["192.0.2.1#53"])


def test_gateway_process_reports_early_exit() -> None:
    # Whatever state the gateway is in, an unknown flag must make it exit; the
    # fixture has to say so quickly and show the log instead of waiting 15 s.
    gateway = GatewayProcess("--no-such-flag-for-fixture-test")
    try:
        with pytest.raises(ServerStartError, match="exited with code"):
            gateway.start(timeout=15)
        assert not gateway.running
    finally:
        gateway.close()
