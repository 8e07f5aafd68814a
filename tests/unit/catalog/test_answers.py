from __future__ import annotations

import dataclasses

import dns.message
import dns.name
import dns.reversename
import pytest

from gateway.catalog.answers import CatalogAnswerer, NeedService, reverse_address
from gateway.catalog.model import (
    CRITICAL,
    MAINTENANCE,
    WARNING,
    Instance,
    Node,
    Snapshot,
    worst_status,
)
from gateway.catalog.source import CatalogUnavailable
from gateway.dns import codec, wire
from gateway.options import Config
from gateway.server import rcodes
from tests.unit.helpers import name_text, parsed

N1 = Node("n1", "192.0.2.1", "dc1", {"rack": "a"})
N2 = Node("n2", "192.0.2.2", "dc1")
N6 = Node("n6", "2001:db8::6", "dc1")


def inst(node: Node, sid: str, **kw: object) -> Instance:
    fields = {"service": "web", "service_id": sid, "node": node, "address": "", "port": 80}
    fields.update(kw)
    return Instance(**fields)  # type: ignore[arg-type]


SNAP = Snapshot(
    services={
        ("dc1", "web"): (
            inst(N1, "w1", tags=("v1",), weight_passing=5),
            inst(N2, "w2", tags=("v2",), status=WARNING, weight_warning=2),
            inst(N1, "w3", status=CRITICAL),
            inst(N2, "w4", status=MAINTENANCE),
        ),
        ("dc1", "v6"): (inst(N6, "x1", service="v6"),),
        ("dc1", "own"): (inst(N1, "o1", service="own", address="198.51.100.7", port=81),),
        ("dc1", "dup"): (inst(N1, "d1", port=1), inst(N1, "d2", port=2, weight_passing=3)),
        ("dc2", "web"): (inst(Node("r1", "203.0.113.1", "dc2"), "r"),),
    },
    nodes={("dc1", "n1"): N1, ("dc1", "n2"): N2},
    serial=7,
)


def ask(name: str, rdtype: str = "A", config: Config | None = None,
        snap: Snapshot = SNAP) -> codec.Answer:  # fmt: skip
    out = CatalogAnswerer(config or Config()).answer(snap, parsed(name, rdtype), "consul")
    assert isinstance(out, codec.Answer)
    return out


def addresses(answer: codec.Answer) -> set[bytes]:
    return {r.rdata for r in answer.answer}


def test_healthy_instances_only_and_weights_by_status() -> None:
    a = ask("web.service.consul")
    assert addresses(a) == {bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])}
    assert a.weights == (5.0, 2.0)  # passing weight 5, warning weight 2


def test_only_passing_drops_warning() -> None:
    a = ask("web.service.consul", config=Config(only_passing=True))
    assert addresses(a) == {bytes([192, 0, 2, 1])}


def test_tag_and_rfc2782_forms() -> None:
    assert addresses(ask("v2.web.service.consul")) == {bytes([192, 0, 2, 2])}
    assert len(ask("_web._v1.service.consul", "SRV").answer) == 1
    assert len(ask("_web._tcp.service.consul", "SRV").answer) == 2
    assert ask("_web._udp.service.consul", "SRV").rcode == wire.NXDOMAIN  # tag "udp"


def test_datacenter_forms() -> None:
    assert addresses(ask("web.service.dc2.consul")) == {bytes([203, 0, 113, 1])}
    assert addresses(ask("web.service.dc2.dc.consul")) == {bytes([203, 0, 113, 1])}
    assert ask("web.service.dc9.consul").rcode == wire.NXDOMAIN


def test_nxdomain_vs_nodata() -> None:
    missing = ask("nope.service.consul")
    assert missing.rcode == wire.NXDOMAIN and missing.authority[0].rtype == wire.SOA
    nodata = ask("v6.service.consul", "A")
    assert nodata.rcode == wire.NOERROR and not nodata.answer
    assert nodata.authority[0].rtype == wire.SOA
    assert ask("v6.service.consul", "AAAA").answer[0].rtype == wire.AAAA
    assert ask("nope.bogus.consul").rcode == wire.NXDOMAIN
    assert ask("x.y.z.service.consul").rcode == wire.NXDOMAIN


def test_duplicate_addresses_merge_and_add_weights() -> None:
    a = ask("dup.service.consul")
    assert len(a.answer) == 1 and a.weights == (4.0,)
    assert len(ask("dup.service.consul", "SRV").answer) == 2  # ports differ


def test_srv_targets_glue_and_meta() -> None:
    a = ask("web.service.consul", "SRV")
    rdata = sorted(r.rdata for r in a.answer)
    assert rdata[0][:6] == b"\x00\x01\x00\x02\x00\x50"  # prio 1, weight 2 (warning), port 80
    extra = {(name_text(r.name), r.rtype) for r in a.additional}
    assert ("n1.node.dc1.consul", wire.A) in extra and ("n1.node.dc1.consul", wire.TXT) in extra
    own = ask("own.service.consul", "SRV")
    target = own.answer[0].rdata[6:]
    assert name_text(target) == "c6336407.addr.dc1.consul"
    assert own.additional[0].rdata == bytes([198, 51, 100, 7])


def test_ttls_per_service_and_soa_fields() -> None:
    config = Config(service_ttl={"*": 5, "web": 30}, soa_min_ttl=9, soa_refresh=11)
    assert ask("web.service.consul", config=config).answer[0].ttl == 30
    assert ask("own.service.consul", config=config).answer[0].ttl == 5
    soa = ask("nope.service.consul", config=config).authority[0]
    assert soa.ttl == 9
    reply = dns.message.from_wire(
        codec.render(
            b"\x06consul\x00\x00\x06\x00\x01",
            codec.Answer(0, answer=(soa,)),
            edns=None,
            payload=512,
        )
    )
    rr = reply.answer[0][0]
    assert (rr.serial, rr.refresh, rr.minimum) == (7, 11, 9)


def test_node_addr_and_apex() -> None:
    node = ask("n1.node.consul")
    assert node.answer[0].rdata == bytes([192, 0, 2, 1])
    assert node.additional[0].rdata == b"\x06rack=a"
    assert ask("n1.node.consul", "TXT").answer[0].rdata == b"\x06rack=a"
    assert ask("missing.node.consul").rcode == wire.NXDOMAIN
    assert ask("c0000201.addr.consul").answer[0].rdata == bytes([192, 0, 2, 1])
    assert ask("c0000201.addr.consul", "AAAA").answer == ()
    assert ask("zz.addr.consul").rcode == wire.NXDOMAIN
    assert ask("consul", "SOA").answer[0].rtype == wire.SOA
    assert ask("consul", "NS").answer[0].rtype == wire.NS


def test_incomplete_view_asks_for_a_fetch() -> None:
    lazy = dataclasses.replace(SNAP, complete=False)
    out = CatalogAnswerer(Config()).answer(lazy, parsed("other.service.consul"), "consul")
    assert out == NeedService("dc1", "other")


def test_unavailable_view_is_servfail() -> None:
    down = dataclasses.replace(SNAP, available=False)
    with pytest.raises(CatalogUnavailable) as failure:
        ask("web.service.consul", snap=down)
    assert rcodes.rcode_for(failure.value) == wire.SERVFAIL


def test_reverse_lookup() -> None:
    assert reverse_address(dns.name.from_text("1.2.0.192.in-addr.arpa")) == "192.0.2.1"
    assert reverse_address(dns.name.from_text("bad.in-addr.arpa")) is None
    assert reverse_address(dns.name.from_text("2.0.192.in-addr.arpa")) is None  # a network
    v6 = dns.reversename.from_address("2001:db8::1")
    assert reverse_address(v6) == "2001:db8::1"
    assert reverse_address(v6.parent()) is None
    names = SNAP.reverse("192.0.2.1")
    assert names[0] == "n1.node.dc1"
    assert SNAP.reverse("198.51.100.7") == ["own.service.dc1"]


def test_worst_status() -> None:
    assert worst_status([]) == "passing"
    assert worst_status(["passing", "warning"]) == "warning"
    assert worst_status(["warning", "critical", "passing"]) == "critical"
    assert worst_status(["bogus"]) == "critical"
