"""dnsmasq's forwarding policy, against the real dnsmasq and two real Knot upstreams.

Issue 8: per-domain upstreams (``--server /dom/IP``, ``/dom/#``, ``/dom/``),
``--rev-server``, ``--local``, ``--address``, ``--domain-needed``,
``--bogus-priv``, ``--stop-dns-rebind`` with ``--rebind-domain-ok``. The same
rules go to a dnsmasq started by the test and to the gateway, both in front of
the same two Knot servers, and every question of the corpus must get the same
rcode and the same answer records (TTLs aside: dnsmasq counts them down).
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.reversename
import pytest

from harness.dnsmasq import DnsmasqServer
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.zone import ZONE, ZONE_RECORDS, ZoneRecord
from tests.support.dnsclient import query

# One address per range either list might hold, and public ones that pass.
ADDRESSES_V4 = {
    "pub": "93.184.216.34",
    "bench": "198.18.0.1",
    "priv10": "10.1.1.1",
    "priv172": "172.16.5.5",
    "priv172b": "172.31.5.5",
    "notpriv172": "172.32.5.5",
    "priv192": "192.168.1.5",
    "lo": "127.0.0.2",
    "zero": "0.1.2.3",
    "cgnat": "100.64.1.1",
    "ll": "169.254.1.1",
    "test1": "192.0.2.1",
    "test2": "198.51.100.1",
    "test3": "203.0.113.1",
    "bcast": "255.255.255.255",
    "ok": "192.168.9.9",
    "x.ok": "10.9.9.9",
}
ADDRESSES_V6 = {
    "pub6": "2606:4700::1",
    "ula": "fd00::1",
    "ulafc": "fc00::1",
    "ll6": "fe80::1",
    "site6": "fec0::1",
    "mapped": "::ffff:192.168.1.1",
    "mappedpub": "::ffff:93.184.216.34",
    "doc6": "2001:db8::1",
    "lo6": "::1",
}
RECORDS_A = (
    ZONE_RECORDS
    + tuple(ZoneRecord(f"{label}.{ZONE}", "A", address) for label, address in ADDRESSES_V4.items())
    + tuple(
        ZoneRecord(f"{label}.{ZONE}", "AAAA", address) for label, address in ADDRESSES_V6.items()
    )
    + (
        ZoneRecord(f"www.sub.{ZONE}", "A", "198.18.0.11"),
        ZoneRecord(f"www.deep.sub.{ZONE}", "A", "198.18.0.13"),
        ZoneRecord(f"www.adr.{ZONE}", "MX", f"10 mail.{ZONE}"),
        ZoneRecord(f"null.{ZONE}", "MX", f"10 mail.{ZONE}"),
    )
)
# The per-domain upstream: other data for the same names, so an answer shows who gave it.
RECORDS_B = (
    *ZONE_RECORDS,
    ZoneRecord(f"www.sub.{ZONE}", "A", "198.18.0.22"),
    ZoneRecord(f"www.deep.sub.{ZONE}", "A", "198.18.0.23"),
    ZoneRecord(f"only-b.sub.{ZONE}", "A", "198.18.0.24"),
)


def rules(knot_a: KnotUpstream, knot_b: KnotUpstream) -> list[tuple[str, str]]:
    """(dnsmasq option, value) pairs; the gateway's flag is the same name."""
    a = f"127.0.0.1#{knot_a.port}"
    b = f"127.0.0.1#{knot_b.port}"
    return [
        ("server", a),
        ("server", f"/sub.example.test/{b}"),
        ("server", "/deep.sub.example.test/#"),
        ("server", "/loc.example.test/"),
        ("rev-server", f"10.0.0.0/8,{b}"),
        ("local", "/lcl.test/"),
        ("address", "/adr.example.test/10.1.2.3"),
        ("address", "/adr6.example.test/fd00::5"),
        ("address", "/null.example.test/#"),
        ("address", "/nx.example.test/"),
        ("address", "/addr-and-server.sub.example.test/10.3.3.3"),
        ("rebind-domain-ok", "/ok.example.test/"),
    ]


SWITCHES = ("domain-needed", "bogus-priv", "stop-dns-rebind")

CORPUS: list[tuple[str, str]] = [
    *((f"{label}.{ZONE}", "A") for label in ADDRESSES_V4),
    *((f"{label}.{ZONE}", "AAAA") for label in ADDRESSES_V6),
    (f"www.{ZONE}", "A"),
    (f"www.{ZONE}", "AAAA"),
    (f"www.{ZONE}", "MX"),
    (f"mail.{ZONE}", "MX"),
    (f"does-not-exist.{ZONE}", "A"),
    (f"www.sub.{ZONE}", "A"),
    (f"only-b.sub.{ZONE}", "A"),
    (f"www.deep.sub.{ZONE}", "A"),
    (f"x.loc.{ZONE}", "A"),
    (f"loc.{ZONE}", "TXT"),
    ("x.lcl.test", "A"),
    ("lcl.test", "MX"),
    (f"adr.{ZONE}", "A"),
    (f"www.adr.{ZONE}", "A"),
    (f"www.adr.{ZONE}", "AAAA"),
    (f"www.adr.{ZONE}", "MX"),
    (f"x.adr6.{ZONE}", "AAAA"),
    (f"x.adr6.{ZONE}", "A"),
    (f"null.{ZONE}", "A"),
    (f"null.{ZONE}", "AAAA"),
    (f"null.{ZONE}", "MX"),
    (f"x.nx.{ZONE}", "A"),
    (f"nx.{ZONE}", "MX"),
    (f"addr-and-server.sub.{ZONE}", "A"),
    (f"addr-and-server.sub.{ZONE}", "AAAA"),
    ("nodots", "A"),
    ("nodots", "AAAA"),
    ("nodots", "MX"),
    *(
        (dns.reversename.from_address(address).to_text(), "PTR")
        for address in (
            "10.1.1.1",
            "172.16.5.5",
            "172.31.5.5",
            "172.32.5.5",
            "192.168.1.5",
            # Not 127.0.0.1 and ::1: their PTR is localhost. here (RFC 6761,
            # issue 8), NXDOMAIN from dnsmasq --no-hosts; see the test below.
            "127.1.2.3",
            "0.1.2.3",
            "100.64.1.1",
            "169.254.1.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "255.255.255.255",
            "93.184.216.34",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "2001:db8::1",
            "::",
            "2606:4700::1",
        )
    ),
    ("5.5.16.172.in-addr.arpa", "A"),  # bogus-priv is about PTR only
    # Networks, not addresses: dnsmasq fills the missing labels with zeros.
    ("16.172.in-addr.arpa", "PTR"),
    ("172.in-addr.arpa", "PTR"),
    ("168.192.in-addr.arpa", "PTR"),
    ("10.in-addr.arpa", "PTR"),
    ("in-addr.arpa", "PTR"),
    ("d.f.ip6.arpa", "PTR"),
    ("8.e.f.ip6.arpa", "PTR"),
    ("ip6.arpa", "PTR"),
    ("x.16.172.in-addr.arpa", "PTR"),
    ("1.2.3.4.5.in-addr.arpa", "PTR"),
    (f"x.adr6.{ZONE}", "MX"),
    (f"x.adr.{ZONE}", "TXT"),
]


@pytest.fixture(scope="module")
def knots() -> Iterator[tuple[KnotUpstream, KnotUpstream]]:
    with KnotUpstream(records=RECORDS_A) as a, KnotUpstream(records=RECORDS_B) as b:
        yield a, b


@pytest.fixture(scope="module")
def dnsmasq(knots: tuple[KnotUpstream, KnotUpstream]) -> Iterator[DnsmasqServer]:
    servers = [value for option, value in rules(*knots) if option == "server"]
    extra = [f"--{option}={value}" for option, value in rules(*knots) if option != "server"]
    with DnsmasqServer(servers, extra_args=[*extra, *(f"--{s}" for s in SWITCHES)]) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(knots: tuple[KnotUpstream, KnotUpstream]) -> Iterator[GatewayProcess]:
    args = [arg for option, value in rules(*knots) for arg in (f"--{option}", value)]
    with GatewayProcess(*args, "--no-resolv", *(f"--{s}" for s in SWITCHES)) as gw:
        yield gw


def outcome(msg: dns.message.Message) -> tuple[str, list[str]]:
    """The rcode and the answer records without TTLs."""
    records = sorted(
        f"{rrset.name} {rrset.rdclass} {rrset.rdtype} {rdata}"
        for rrset in msg.answer
        for rdata in rrset
    )
    return dns.rcode.to_text(msg.rcode()), records


def test_the_gateway_answers_as_dnsmasq(dnsmasq: DnsmasqServer, gateway: GatewayProcess) -> None:
    differing = []
    for name, rdtype in CORPUS:
        ours = outcome(query(gateway.host, gateway.port, name, rdtype))
        theirs = outcome(query(dnsmasq.host, dnsmasq.port, name, rdtype))
        if ours != theirs:
            differing.append((name, rdtype, ours, theirs))
    assert differing == [], "\n".join(map(str, differing))


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "answer"),
    [
        # The longest domain wins: sub.example.test goes to the second Knot,
        # deep.sub.example.test (#) back to the standard one.
        (f"www.sub.{ZONE}", "A", "NOERROR", ["198.18.0.22"]),
        (f"only-b.sub.{ZONE}", "A", "NOERROR", ["198.18.0.24"]),
        (f"www.deep.sub.{ZONE}", "A", "NOERROR", ["198.18.0.13"]),
        (f"pub.{ZONE}", "A", "NOERROR", ["93.184.216.34"]),
        (f"x.loc.{ZONE}", "A", "NXDOMAIN", []),
        (f"www.adr.{ZONE}", "A", "NOERROR", ["10.1.2.3"]),
        (f"www.adr.{ZONE}", "MX", "NOERROR", [f"10 mail.{ZONE}"]),  # forwarded
        (f"null.{ZONE}", "AAAA", "NOERROR", ["::"]),
        ("nodots", "A", "NXDOMAIN", []),
        ("5.5.16.172.in-addr.arpa", "PTR", "NXDOMAIN", []),
        (f"priv192.{ZONE}", "A", "NOERROR", []),  # rebinding: emptied
        (f"ok.{ZONE}", "A", "NOERROR", ["192.168.9.9"]),  # rebind-domain-ok
        (f"x.ok.{ZONE}", "A", "NOERROR", ["10.9.9.9"]),
    ],
)
def test_rules_decide_who_answers(
    gateway: GatewayProcess, name: str, rdtype: str, rcode: str, answer: list[str]
) -> None:
    """What the differential test agrees on is what the issue asks for."""
    msg = query(gateway.host, gateway.port, name, rdtype)
    assert dns.rcode.to_text(msg.rcode()) == rcode
    assert sorted(rdata.to_text() for rrset in msg.answer for rdata in rrset) == answer


def test_loopback_reverse_names_are_localhost_a_deliberate_difference(
    gateway: GatewayProcess,
) -> None:
    """dnsmasq --no-hosts --bogus-priv: NXDOMAIN; the gateway: the RFC 6761 answer."""
    for address in ("127.0.0.1", "::1"):
        name = dns.reversename.from_address(address).to_text()
        reply = query(gateway.host, gateway.port, name, "PTR")
        assert outcome(reply) == ("NOERROR", [f"{name} 1 12 localhost."])
