"""One dnsmasq.conf, two servers: a real dnsmasq and the gateway (``--dnsmasq-conf``).

Issue 8: "the same dnsmasq.conf given to a real dnsmasq (started by the test) and to
the gateway gives the same rcodes and answer records". The shared file uses
``conf-dir=`` (with a file dnsmasq's rules skip) and is included from a small top
file per server that sets only ``port=`` and ``listen-address=``; the gateway listens
where its file says (no ``--listen`` flag). Upstreams are Knot servers on loopback:
A (the default upstream), B (the same zone with other addresses, for per-domain
servers) and R (a reverse zone, for ``rev-server=``).

Known, documented differences (README, "Coming from dnsmasq") are listed in
``EXPECTED_DIFFERENCES`` and asserted as such, so a change on either side shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from harness import zone
from harness.dnsmasq import DnsmasqServer
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.ports import LOOPBACK, free_port
from harness.zone import ZoneRecord
from tests.support.dnsclient import query

MAX_TTL_S = 60  # max-ttl=: no forwarded answer may carry more
LOCAL_TTL_S = 7  # local-ttl=: hosts-file answers
HOSTS_ADDRESS = "192.0.2.200"
BLOCKED_ADDRESS = "192.0.2.99"
REVERSE_ZONE = "2.0.192.in-addr.arpa."
# Not in any range dnsmasq's stop-dns-rebind rejects (RFC 2544 benchmarking).
PUBLIC_ADDRESS = "198.18.0.4"


def _soa_ns(origin: str) -> tuple[ZoneRecord, ...]:
    return (
        ZoneRecord(origin, "SOA", f"ns1.{zone.ZONE} hostmaster.{zone.ZONE} 1 3600 900 604800 60"),
        ZoneRecord(origin, "NS", f"ns1.{zone.ZONE}"),
    )


# A: the test zone plus names for forwarding rules and DNS-rebinding checks.
A_RECORDS = (
    *zone.ZONE_RECORDS,
    ZoneRecord("fwd." + zone.ZONE, "A", "192.0.2.77"),
)
# B: the same zone, other answers; example.test goes here, mail.example.test to A.
B_RECORDS = (
    *_soa_ns(zone.ZONE),
    ZoneRecord(zone.NS_NAME, "A", zone.NS_A),
    ZoneRecord(zone.WWW, "A", "192.0.2.110"),
    ZoneRecord(zone.MAIL, "A", "192.0.2.125"),
    ZoneRecord("fwd." + zone.ZONE, "A", "192.0.2.177"),
    ZoneRecord("rebind." + zone.ZONE, "A", "10.1.2.3"),
    ZoneRecord("rebind6." + zone.ZONE, "AAAA", "fd00::3"),
    ZoneRecord("loop." + zone.ZONE, "A", "127.0.0.5"),
    ZoneRecord("x.ok." + zone.ZONE, "A", "10.1.2.4"),
    ZoneRecord("testnet." + zone.ZONE, "A", "192.0.2.5"),  # TEST-NET-1 is "private" to dnsmasq
    ZoneRecord("public." + zone.ZONE, "A", PUBLIC_ADDRESS),
)
R_RECORDS = (
    *_soa_ns(REVERSE_ZONE),
    ZoneRecord("10." + REVERSE_ZONE, "PTR", zone.WWW),
)


@dataclass(frozen=True)
class Upstreams:
    a: KnotUpstream
    b: KnotUpstream
    r: KnotUpstream


def common_conf(up: Upstreams, folder: Path) -> Path:
    """The configuration both servers run with (everything but where they listen)."""
    parts = folder / "dnsmasq.d"
    parts.mkdir()
    (parts / "10-domains.conf").write_text(
        f"server=/{zone.ZONE}/{LOOPBACK}#{up.b.port}\n"
        f"server=/{zone.MAIL}/{LOOPBACK}#{up.a.port}  # longest suffix wins\n"
        f"server=/fwd.{zone.ZONE}/#\n"  # '#': the standard servers (A)
        "local=/internal.test/\n"
        f"address=/blocked.{zone.ZONE}/{BLOCKED_ADDRESS}\n"
        f"address=/ads.{zone.ZONE}/\n"
        f"rev-server=192.0.2.0/24,{LOOPBACK}#{up.r.port}\n"
    )
    (parts / "20-policy.conf").write_text(
        "domain-needed\nbogus-priv\nstop-dns-rebind\n"
        # dnsmasq counts the TEST-NETs (all our answers) as private: exempt the names
        # whose answers the other rules are about.
        f"rebind-domain-ok=/ok.{zone.ZONE}/www.{zone.ZONE}/mail.{zone.ZONE}/fwd.{zone.ZONE}/\n"
        f"max-ttl={MAX_TTL_S}\nneg-ttl=30\n"
        "min-cache-ttl=10\nmax-cache-ttl=3600\ndns-forward-max=150\nedns-packet-max=1232\n"
        "strict-order\n"
    )
    # Skipped by dnsmasq's conf-dir rules: if either server read them, it would stop.
    (parts / "30-broken.conf~").write_text("this-is-not-an-option\n")
    (parts / "README").write_text("not a configuration file\n")
    conf = folder / "common.conf"
    conf.write_text(
        "# shared by dnsmasq and the gateway\n"
        "no-resolv\nno-poll\n"
        "cache-size=1000\n"
        f"server={LOOPBACK}#{up.a.port}\n"
        f"conf-dir={parts},*.conf\n"
    )
    return conf


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with (
        KnotUpstream(records=A_RECORDS) as a,
        KnotUpstream(records=B_RECORDS) as b,
        KnotUpstream(records=R_RECORDS, zone=REVERSE_ZONE) as r,
    ):
        yield Upstreams(a, b, r)


@contextlib.contextmanager
def both_with(common: Path, folder: Path) -> Iterator[tuple[DnsmasqServer, GatewayProcess]]:
    """dnsmasq and the gateway, each from a top file that includes ``common``."""
    port = free_port()
    top = folder / f"gateway-{common.stem}.conf"
    top.write_text(f"port={port}\nlisten-address={LOOPBACK}\nconf-file={common}\n")
    with (
        DnsmasqServer([], conf_file=common) as dnsmasq,
        GatewayProcess(
            "--dnsmasq-conf", str(top), port=port, listen_flag=False, probe_name=zone.WWW
        ) as gateway,
    ):
        yield dnsmasq, gateway


@pytest.fixture(scope="module")
def servers(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DnsmasqServer, GatewayProcess]]:
    folder = tmp_path_factory.mktemp("dnsmasq-conf")
    with both_with(common_conf(upstreams, folder), folder) as pair:
        yield pair


def hosts_conf(up: Upstreams, folder: Path) -> Path:
    """Hosts files: the system's off, one of ours, its TTL; names without a dot."""
    hosts = folder / "hosts"
    hosts.write_text(f"{HOSTS_ADDRESS} printer.lan printer\n# a comment\n")
    conf = folder / "hosts.conf"
    conf.write_text(
        f"no-resolv\nno-hosts\naddn-hosts={hosts}\nlocal-ttl={LOCAL_TTL_S}\n"
        f"domain-needed\nserver={LOOPBACK}#{up.a.port}\n"
    )
    return conf


def answer_of(msg: dns.message.Message) -> tuple[str, list[tuple[str, str, str]]]:
    """rcode and answer records (name, type, rdata), without TTLs and order."""
    records = sorted(
        (rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in msg.answer
        for rdata in rrset
    )
    return dns.rcode.to_text(msg.rcode()), records


QUESTIONS = [
    (zone.WWW, "A"),  # /example.test/ -> B
    (zone.WWW, "AAAA"),  # B has none: NODATA, although A has one
    (zone.ZONE, "MX"),  # B has no MX, A has one
    (zone.MAIL, "A"),  # /mail.example.test/ -> A, the longer domain
    ("fwd." + zone.ZONE, "A"),  # /fwd.example.test/# -> the standard servers (A)
    ("missing." + zone.ZONE, "A"),  # NXDOMAIN from B
    ("host.internal.test.", "A"),  # local=: NXDOMAIN, never forwarded
    ("internal.test.", "SOA"),
    ("blocked." + zone.ZONE, "A"),  # address=
    ("deep.blocked." + zone.ZONE, "A"),  # address= covers the names below
    ("ads." + zone.ZONE, "A"),  # address=/d/: NXDOMAIN
    ("10.2.0.192.in-addr.arpa.", "PTR"),  # rev-server -> R
    ("nodot.", "A"),  # domain-needed: not forwarded
    ("1.0.168.192.in-addr.arpa.", "PTR"),  # bogus-priv
    ("rebind." + zone.ZONE, "A"),  # stop-dns-rebind
    ("rebind6." + zone.ZONE, "AAAA"),
    ("loop." + zone.ZONE, "A"),
    ("x.ok." + zone.ZONE, "A"),  # rebind-domain-ok
    ("testnet." + zone.ZONE, "A"),
    ("public." + zone.ZONE, "A"),
]

# Question -> (dnsmasq's, the gateway's) where they legitimately differ (see README).
EXPECTED_DIFFERENCES: dict[tuple[str, str], tuple[object, object]] = {}


def test_same_rcodes_and_answer_records(servers: tuple[DnsmasqServer, GatewayProcess]) -> None:
    dnsmasq, gateway = servers
    differing = {}
    for name, rdtype in QUESTIONS:
        theirs = answer_of(query(dnsmasq.host, dnsmasq.port, name, rdtype))
        ours = answer_of(query(gateway.host, gateway.port, name, rdtype))
        if theirs != ours:
            differing[(name, rdtype)] = (theirs, ours)
    assert differing == EXPECTED_DIFFERENCES


HOSTS_QUESTIONS = [
    ("printer.lan.", "A"),  # addn-hosts
    ("printer.lan.", "AAAA"),  # a hosts name without that family: NODATA
    ("printer.", "A"),  # a name without a dot from a hosts file (domain-needed allows it)
    ("200.2.0.192.in-addr.arpa.", "PTR"),  # hosts-file reverse
    (zone.WWW, "A"),  # not in the file: forwarded
    ("nodot.", "A"),  # domain-needed: not forwarded
]


# dnsmasq forwards a hosts-file name asked for the other address family (our upstream
# does not serve `lan.`: REFUSED); the gateway answers NODATA from the file (README).
EXPECTED_HOSTS_DIFFERENCES: dict[tuple[str, str], tuple[object, object]] = {
    ("printer.lan.", "AAAA"): (("REFUSED", []), ("NOERROR", [])),
}


def test_hosts_files_agree(upstreams: Upstreams, tmp_path: Path) -> None:
    differing = {}
    with both_with(hosts_conf(upstreams, tmp_path), tmp_path) as (dnsmasq, gateway):
        for name, rdtype in HOSTS_QUESTIONS:
            theirs = answer_of(query(dnsmasq.host, dnsmasq.port, name, rdtype))
            ours = answer_of(query(gateway.host, gateway.port, name, rdtype))
            if theirs != ours:
                differing[(name, rdtype)] = (theirs, ours)
        for server in (dnsmasq, gateway):
            local = query(server.host, server.port, "printer.lan.", "A")
            assert [rrset.ttl for rrset in local.answer] == [LOCAL_TTL_S], server.label
    assert differing == EXPECTED_HOSTS_DIFFERENCES


def test_ttl_options_bound_both(servers: tuple[DnsmasqServer, GatewayProcess]) -> None:
    for server in servers:
        forwarded = query(server.host, server.port, zone.MAIL, "A")  # 300 s upstream
        assert [rrset.ttl for rrset in forwarded.answer] == [MAX_TTL_S], server.label
