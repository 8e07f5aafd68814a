"""Issue 8, "Every Consul name form": connect, ingress, virtual, peer, ns/ap."""

from __future__ import annotations

import pytest

from gateway.catalog.answers import CatalogAnswerer, NeedService, Outcome
from gateway.catalog.model import CONNECT, CRITICAL, INGRESS, Instance, Node, Snapshot
from gateway.dns import codec, wire
from gateway.options import Config
from tests.unit.catalog.test_answers import inst as catalog_instance
from tests.unit.helpers import parsed

N1 = Node("n1", "192.0.2.1", "dc1")
PN = Node("pn", "192.0.2.9", "dc2")


def inst(node: Node, sid: str, **kw: object) -> Instance:
    return catalog_instance(node, sid, **{"service": "pay", **kw})


SNAP = Snapshot(
    nodes={("dc1", "n1"): N1},
    services={
        ("dc1", "pay"): (inst(N1, "p"),),
        ("pa.peer", "pweb"): (
            inst(PN, "pw0", service="pweb", address="198.51.100.50", tags=("v1",)),
            inst(PN, "pw1", service="pweb"),
        ),
    },
    endpoints={
        CONNECT: {
            ("dc1", "pay"): (
                inst(N1, "proxy0", address="198.51.100.1", port=21000, virtual_ip="240.0.0.1"),
                inst(N1, "proxy1", address="198.51.100.2", status=CRITICAL, virtual_ip="240.0.0.1"),
            ),
            ("dc1", "web"): (),
        },
        INGRESS: {("dc1", "pay"): (inst(N1, "ig", address="198.51.100.40", port=8443),)},
    },
)


def outcome(name: str, rdtype: str = "A", snap: Snapshot = SNAP) -> Outcome:
    return CatalogAnswerer(Config()).answer(snap, parsed(name, rdtype), "consul")


def ask(name: str, rdtype: str = "A", snap: Snapshot = SNAP) -> codec.Answer:
    out = outcome(name, rdtype, snap)
    assert isinstance(out, codec.Answer)
    return out


def rdatas(answer: codec.Answer) -> set[bytes]:
    return {r.rdata for r in answer.answer}


def test_connect_answers_healthy_connect_instances() -> None:
    a = ask("pay.connect.consul")
    assert a.rcode == wire.NOERROR and rdatas(a) == {bytes([198, 51, 100, 1])}
    srv = ask("pay.connect.dc1.consul", "SRV")
    assert [r.rdata[4:6] for r in srv.answer] == [(21000).to_bytes(2, "big")]
    assert ask("web.connect.consul").rcode == wire.NXDOMAIN  # not Connect-capable


def test_ingress_answers_the_gateways() -> None:
    assert rdatas(ask("pay.ingress.consul")) == {bytes([198, 51, 100, 40])}
    assert rdatas(ask("PAY.Ingress.dc1.dc.consul")) == {bytes([198, 51, 100, 40])}


def test_connect_and_ingress_not_yet_fetched_ask_for_their_endpoint() -> None:
    lazy = Snapshot(complete=False)
    assert outcome("pay.connect.consul", snap=lazy) == NeedService("dc1", "pay", CONNECT)
    assert outcome("pay.ingress.consul", snap=lazy) == NeedService("dc1", "pay", INGRESS)
    assert outcome("pay.virtual.consul", snap=lazy) == NeedService("dc1", "pay", CONNECT)
    assert outcome("pay.virtual.pa.consul", snap=lazy) == NeedService("pa.peer", "pay", CONNECT)


def test_static_catalog_has_no_mesh_names() -> None:
    static = Snapshot(services={("dc1", "pay"): (inst(N1, "p"),)})
    assert ask("pay.connect.consul", snap=static).rcode == wire.NXDOMAIN
    assert ask("pay.virtual.consul", snap=static).rcode == wire.NOERROR


def test_virtual_ip() -> None:
    a = ask("pay.virtual.consul")
    assert [(r.rtype, r.rdata) for r in a.answer] == [(wire.A, bytes([240, 0, 0, 1]))]
    assert rdatas(ask("pay.virtual.dc1.dc.consul", "ANY")) == {bytes([240, 0, 0, 1])}
    # No virtual IP, another type, another datacenter: NODATA with the SOA.
    for name, rdtype in (
        ("web.virtual.consul", "A"),
        ("pay.virtual.consul", "AAAA"),
        ("pay.virtual.consul", "SRV"),
        ("pay.virtual.dc2.dc.consul", "A"),
    ):
        a = ask(name, rdtype)
        assert (a.rcode, a.answer, len(a.authority)) == (wire.NOERROR, (), 1), name
    assert ask("pay.virtual.a.b.c.consul").rcode == wire.NXDOMAIN


def test_peer_service_and_its_srv_targets() -> None:
    a = ask("pweb.service.pa.peer.consul")
    assert rdatas(a) == {bytes([198, 51, 100, 50]), bytes([192, 0, 2, 9])}
    assert rdatas(ask("v1.pweb.service.pa.peer.consul")) == {bytes([198, 51, 100, 50])}
    srv = ask("_pweb._tcp.service.pa.peer.consul", "SRV")
    targets = {r.rdata[6:] for r in srv.answer}
    # An own address: <hex>.addr.<domain> with no datacenter; else the node in the peer.
    assert targets == {wire.to_wire("c6336432.addr.consul"), wire.to_wire("pn.node.pa.peer.consul")}
    assert outcome("nope.service.pa.peer.consul", snap=Snapshot(complete=False)) == NeedService(
        "pa.peer", "nope"
    )
    # A peer is not a datacenter, and nodes, queries and connect names take none.
    for name in ("pweb.service.pa.consul", "n1.node.pa.peer.consul", "pay.connect.pa.peer.consul"):
        assert ask(name).rcode == wire.NXDOMAIN, name


def test_peer_addresses_stay_out_of_ptr() -> None:
    assert SNAP.reverse("198.51.100.50") == []


@pytest.mark.parametrize(
    "name",
    [
        "pay.service.default.ns.consul",
        "pay.service.default.ap.consul",
        "pay.service.default.ns.default.ap.consul",
        "pay.service.default.ns.default.ap.dc1.dc.consul",
        "pay.connect.default.ns.consul",
        "n1.node.default.ns.dc1.dc.consul",
        "pweb.service.default.ns.pa.peer.consul",
    ],
)
def test_ce_default_namespace_and_partition(name: str) -> None:
    assert ask(name).rcode == wire.NOERROR and ask(name).answer


@pytest.mark.parametrize(
    "name",
    [
        "pay.service.other.ns.consul",
        "pay.service.other.ap.dc1.dc.consul",
        "pay.service.default.ap.default.ns.consul",  # partition before namespace
        "pay.service.default.ns.default.ns.consul",
        "pay.service.default.ns.dc1.consul",  # a bare datacenter takes no ns/ap
        "pay.service.dc.dc1.consul",
    ],
)
def test_other_namespaces_and_partitions_do_not_exist(name: str) -> None:
    assert ask(name).rcode == wire.NXDOMAIN


def test_touch_reports_the_endpoint() -> None:
    seen: list[tuple[str, str, str]] = []
    answerer = CatalogAnswerer(Config(), on_endpoint=lambda *key: seen.append(key))
    answerer.answer(SNAP, parsed("pay.ingress.consul", "A"), "consul")
    answerer.answer(SNAP, parsed("pay.virtual.consul", "A"), "consul")
    assert seen == [(INGRESS, "dc1", "pay"), (CONNECT, "dc1", "pay")]
