"""The snapshot of a Consul-backed catalog: lookup order, layering, pure data (no sockets)."""

from __future__ import annotations

import pytest

from gateway.catalog.answers import CatalogAnswerer, NeedService
from gateway.catalog.model import (
    CONNECT,
    CRITICAL,
    PASSING,
    Instance,
    Node,
    PreparedResult,
    Snapshot,
)
from gateway.consul.snapshot import ServiceView, build_snapshot, layer_services, safe_name
from gateway.dns import wire
from gateway.dns.codec import Answer
from gateway.options import Config
from tests.unit.helpers import parsed


def inst(name: str = "web", address: str = "10.0.1.1", status: str = PASSING) -> Instance:
    node = Node("n1", "10.0.0.1", "dc1")
    return Instance(name, f"{name}-1", node, address, 80, status=status)


def test_service_view_lookup_order() -> None:
    consul = {("dc1", "web"): (inst(),), ("dc1", "gone"): (), ("dc1", "both"): ()}
    static = {("dc1", "both"): (inst("both"),), ("dc1", "legacy"): (inst("legacy"),)}
    view = ServiceView(
        layer_services(consul, static),
        {"dc1": frozenset({"web", "gone", "other"})},
        frozenset({"dc1", "dc2"}),
    )
    assert view.get(("dc1", "web")) == (inst(),)  # Consul's instances
    assert view.get(("dc1", "both")) == (inst("both"),)  # Consul has none: static fills
    assert view.get(("dc1", "legacy")) == (inst("legacy"),)  # static only
    assert view.get(("dc1", "gone")) == ()  # watched, Consul has no instances
    assert view.get(("dc1", "nope")) == ()  # not in the service list: known absent
    assert view.get(("dc9", "web")) == ()  # a datacenter Consul does not know
    assert view.get(("dc1", "other")) is None  # listed but not fetched yet
    assert view.get(("dc2", "web")) is None  # dc2's list not in yet
    with pytest.raises(KeyError):
        view[("dc1", "other")]
    assert set(view) == {("dc1", "web"), ("dc1", "gone"), ("dc1", "both"), ("dc1", "legacy")}


def test_names_unfit_for_a_url_are_known_absent() -> None:
    view = ServiceView({}, {"dc1": frozenset({"web"})}, frozenset({"dc1"}))
    for name in ("a/../../agent/self", "web%2f", "x?y", "", "a" * 256):
        assert not safe_name(name)
        assert view.get(("dc1", name)) == ()
    assert safe_name("web_1-a")


def test_answerer_reports_service_lookups_but_not_walks() -> None:
    # Idle unwatch learns what is asked for from the answerer (CatalogSource.touch),
    # never from the snapshot: its lookups call nothing back.
    seen: list[tuple[str, str]] = []
    answerer = CatalogAnswerer(
        Config(upstream=()), on_service=lambda dc, name: seen.append((dc, name))
    )
    snap = build_snapshot(
        static=None,
        services={("dc1", "web"): (inst(),)},
        names={"dc1": frozenset({"web", "api"})},
        datacenters=frozenset({"dc1"}),
        nodes={},
        queries={},
        available=True,
    )
    # Walks (the reverse index) are not lookups.
    ptr = answerer.answer_ptr(snap, parsed("1.1.0.10.in-addr.arpa", "PTR"), "10.0.1.1")
    assert isinstance(ptr, Answer) and ptr.answer
    dict(snap.services.items())
    list(snap.services.values())
    assert seen == []
    answerer.answer(snap, parsed("web.service.consul"), "consul")
    assert seen == [("dc1", "web")]
    answerer.answer(snap, parsed("api.service.consul"), "consul")  # to be fetched: a use too
    answerer.answer(snap, parsed("_web._tcp.service.dc1.consul", "SRV"), "consul")
    assert seen == [("dc1", "web"), ("dc1", "api"), ("dc1", "web")]


def test_build_snapshot_layers_consul_over_static() -> None:
    static = Snapshot(
        services={("dc1", "legacy"): (inst("legacy", address="10.0.2.1"),)},
        nodes={
            ("dc1", "n1"): Node("n1", "10.9.9.9", "dc1"),
            ("dc1", "s"): Node("s", "1.1.1.1", "dc1"),
        },
        datacenters=frozenset({"dc1"}),
    )
    snap = build_snapshot(
        static=static,
        services={("dc1", "web"): (inst(),)},
        names={"dc1": frozenset({"web"})},
        datacenters=frozenset({"dc1", "dc2"}),
        nodes={("dc1", "n1"): Node("n1", "10.0.0.1", "dc1")},
        queries={("dc1", "pq"): PreparedResult((inst(),), 5, "dc1")},
        available=True,
    )
    assert not snap.complete and snap.available
    assert snap.services.get(("dc1", "legacy")) == (inst("legacy", address="10.0.2.1"),)
    assert snap.nodes[("dc1", "n1")].address == "10.0.0.1"  # Consul wins
    assert snap.nodes[("dc1", "s")].address == "1.1.1.1"
    assert snap.datacenters == {"dc1", "dc2"}
    assert snap.queries[("dc1", "pq")].ttl == 5
    # PTR: watched instances and nodes populate the reverse index.
    assert snap.reverse("10.0.1.1") == ["web.service.dc1"]
    assert snap.reverse("10.0.0.1") == ["n1.node.dc1"]


def test_answerer_on_a_consul_view() -> None:
    answerer = CatalogAnswerer(Config(upstream=()))
    snap = build_snapshot(
        static=None,
        services={("dc1", "web"): (inst(), inst(address="10.0.1.2", status=CRITICAL))},
        names={"dc1": frozenset({"web", "api"})},
        datacenters=frozenset({"dc1"}),
        nodes={},
        queries={},
        available=True,
    )

    def ask(name: str) -> object:
        return answerer.answer(snap, parsed(name, "A"), "consul")

    web = ask("web.service.consul")
    assert isinstance(web, Answer) and web.rcode == wire.NOERROR and len(web.answer) == 1
    assert ask("api.service.consul") == NeedService("dc1", "api")
    for unknown in ("nope.service.consul", "web.service.dc9.consul"):
        answer = ask(unknown)
        assert isinstance(answer, Answer) and answer.rcode == wire.NXDOMAIN


def test_connect_instances_of_static_files_layer_under_consuls() -> None:
    """Issue 8: a Connect-native service from --catalog files answers <svc>.connect
    beside Consul, and Consul's instances win for a service it has some of."""
    files = {
        ("dc1", "legacy"): (inst("legacy", "10.0.2.1"),),
        ("dc1", "web"): (inst("web", "10.0.2.2"),),
    }
    static = Snapshot(endpoints={CONNECT: files})
    snap = build_snapshot(
        static=static,
        services={},
        names={"dc1": frozenset({"web", "legacy"})},
        datacenters=frozenset({"dc1"}),
        nodes={},
        queries={},
        available=True,
        endpoints={CONNECT: {("dc1", "web"): (inst("web", "10.0.1.9"),)}},
    )
    connect = snap.endpoints[CONNECT]
    assert connect.get(("dc1", "legacy")) == (inst("legacy", "10.0.2.1"),)
    assert connect.get(("dc1", "web")) == (inst("web", "10.0.1.9"),)
    assert connect.get(("dc1", "nope")) == ()  # not in Consul's list: known absent
