"""Consul HTTP answers → catalog values, layering, blocking-query rules (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.catalog.answers import CatalogAnswerer, NeedService
from gateway.catalog.model import (
    CRITICAL,
    MAINTENANCE,
    PASSING,
    WARNING,
    Instance,
    Node,
    PreparedResult,
    Snapshot,
)
from gateway.consul.view import (
    Backoff,
    BadResponse,
    ServiceView,
    build_snapshot,
    check_status,
    datacenter_names,
    instance_from_entry,
    instances_from_health,
    layer_services,
    next_index,
    nodes_from_catalog,
    parse_duration,
    prepared_result,
    read_params,
    service_names,
    too_stale,
)
from gateway.dns import wire
from gateway.dns.codec import Answer
from gateway.options import Config
from tests.unit.helpers import parsed


def entry(
    *,
    node: str = "n1",
    node_address: str = "10.0.0.1",
    service_id: str = "web1",
    address: str = "10.0.1.1",
    port: int = 80,
    checks: list[dict[str, Any]] | None = None,
    **service: Any,
) -> dict[str, Any]:
    """A /v1/health/service entry shaped like Consul 1.16's (fields we do not use left out)."""
    return {
        "Node": {
            "Node": node,
            "Address": node_address,
            "Datacenter": "dc1",
            "Meta": {"rack": "r1"},
            "TaggedAddresses": {"lan": node_address},
        },
        "Service": {
            "ID": service_id,
            "Service": "web",
            "Tags": ["v1"],
            "Address": address,
            "Meta": {"version": "2"},
            "Port": port,
            "Weights": {"Passing": 3, "Warning": 1},
            **service,
        },
        "Checks": checks
        if checks is not None
        else [
            {"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
            {"CheckID": f"service:{service_id}", "Status": "passing", "ServiceID": service_id},
        ],
    }


def inst(name: str = "web", address: str = "10.0.1.1", status: str = PASSING) -> Instance:
    node = Node("n1", "10.0.0.1", "dc1")
    return Instance(name, f"{name}-1", node, address, 80, status=status)


# -- health entries -------------------------------------------------------------


def test_instance_from_entry_takes_every_field() -> None:
    got = instance_from_entry(entry(), "dc1")
    assert got == Instance(
        service="web",
        service_id="web1",
        node=Node("n1", "10.0.0.1", "dc1", {"rack": "r1"}),
        address="10.0.1.1",
        port=80,
        tags=("v1",),
        meta={"version": "2"},
        weight_passing=3,
        weight_warning=1,
        status=PASSING,
    )


def test_instance_without_own_address_uses_the_node_address() -> None:
    got = instance_from_entry(entry(address=""), "dc1")
    assert got.address == "" and got.effective_address == "10.0.0.1"


def test_missing_optional_fields_take_consul_defaults() -> None:
    raw = entry(Tags=None, Meta=None, Weights=None)
    got = instance_from_entry(raw, "dc1")
    assert (got.tags, got.meta, got.weight_passing, got.weight_warning) == ((), {}, 1, 1)


@pytest.mark.parametrize(
    ("checks", "status"),
    [
        ([], PASSING),
        ([{"CheckID": "a", "Status": "passing"}, {"CheckID": "b", "Status": "warning"}], WARNING),
        # A node check (serfHealth) counts as much as the service's own checks.
        (
            [
                {"CheckID": "serfHealth", "Status": "critical"},
                {"CheckID": "s", "Status": "passing"},
            ],
            CRITICAL,
        ),
        ([{"CheckID": "_node_maintenance", "Status": "critical"}], MAINTENANCE),
        ([{"CheckID": "_service_maintenance:web1", "Status": "critical"}], MAINTENANCE),
        # Never healthy by accident: an unknown status counts as critical.
        ([{"CheckID": "x", "Status": "bogus"}], CRITICAL),
    ],
)
def test_status_is_the_worst_check(checks: list[dict[str, Any]], status: str) -> None:
    assert instance_from_entry(entry(checks=checks), "dc1").status == status


def test_warning_instance_uses_the_warning_weight() -> None:
    checks = [{"CheckID": "s", "Status": "warning"}]
    assert instance_from_entry(entry(checks=checks), "dc1").weight == 1
    assert instance_from_entry(entry(), "dc1").weight == 3


def test_check_status_of_maintenance_ids() -> None:
    assert check_status({"CheckID": "_node_maintenance", "Status": "critical"}) == MAINTENANCE
    assert check_status({"CheckID": "service:x", "Status": "warning"}) == WARNING


@pytest.mark.parametrize(
    "body",
    [
        {"not": "a list"},
        [{"Node": {"Node": "n"}}],
        [{"Node": {}, "Service": {"Service": "w"}}],
        [entry(Tags="v1")],
    ],
)
def test_malformed_health_answers_are_rejected(body: Any) -> None:
    with pytest.raises(BadResponse):
        instances_from_health(body, "dc1")


def test_lists() -> None:
    nodes = nodes_from_catalog(
        [{"Node": "Web-1", "Address": "::1", "Datacenter": "DC1", "Meta": None}], "dc1"
    )
    assert nodes == {"web-1": Node("Web-1", "::1", "dc1", {})}
    assert service_names({"Web": ["v1"], "consul": []}) == frozenset({"web", "consul"})
    assert datacenter_names(["dc1", "DC2"]) == frozenset({"dc1", "dc2"})
    with pytest.raises(BadResponse):
        service_names(["web"])


def test_prepared_result() -> None:
    body = {"Service": "web", "Nodes": [entry()], "DNS": {"TTL": "5s"}, "Datacenter": "dc2"}
    got = prepared_result(body, "dc1")
    assert got.ttl == 5 and got.datacenter == "dc2" and len(got.instances) == 1
    assert prepared_result({"Nodes": [], "DNS": {"TTL": ""}}, "dc1") == PreparedResult(
        (), None, "dc1"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("", None),
        ("10", None),
        ("1h2x", None),
        ("s", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# -- blocking-query rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "received", "expected"),
    [(0, 15, 15), (15, 15, 15), (15, 20, 20), (20, 15, 0), (0, 0, 1), (5, 0, 0)],
)
def test_next_index(previous: int, received: int, expected: int) -> None:
    assert next_index(previous, received) == expected


def test_too_stale() -> None:
    assert not too_stale(None, 10)
    assert not too_stale(10_000, 10)
    assert too_stale(10_001, 10)


def test_read_params() -> None:
    assert read_params("dc1") == [("dc", "dc1"), ("stale", "")]
    assert read_params("dc2", index=7, wait_s=60, stale=False) == [
        ("dc", "dc2"),
        ("index", "7"),
        ("wait", "60000ms"),
    ]


def test_backoff_doubles_to_its_maximum_with_jitter() -> None:
    high = Backoff(rng=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    low = Backoff(rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]
    high.reset()
    assert high.next() == pytest.approx(0.1)


# -- the view -----------------------------------------------------------------------


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


def test_service_view_reports_lookups_but_not_iteration() -> None:
    seen: list[tuple[str, str]] = []
    view = ServiceView({("dc1", "web"): (inst(),)}, {}, None, seen.append)
    dict(view.items())
    list(view.values())
    assert seen == []
    view.get(("dc1", "web"))
    assert seen == [("dc1", "web")]


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
