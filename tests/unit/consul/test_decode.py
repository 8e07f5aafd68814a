"""Consul's JSON answers → catalog values (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.catalog.model import (
    CRITICAL,
    MAINTENANCE,
    PASSING,
    WARNING,
    Instance,
    Node,
    PreparedResult,
)
from gateway.consul.decode import (
    BadResponse,
    check_status,
    datacenter_names,
    instance_from_entry,
    instances_from_health,
    json_body,
    nodes_from_catalog,
    parse_duration,
    prepared_result,
    service_names,
    services_from_dump,
)
from gateway.consul.http import HTTPResult


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


def test_virtual_ip_from_the_consul_virtual_tagged_address() -> None:
    tagged = {
        "consul-virtual": {"Address": "240.0.0.1", "Port": 21000},
        "lan_ipv4": {"Address": "10.0.1.1", "Port": 21000},
    }
    assert instance_from_entry(entry(TaggedAddresses=tagged), "dc1").virtual_ip == "240.0.0.1"
    assert instance_from_entry(entry(), "dc1").virtual_ip == ""
    broken = {"consul-virtual": "240.0.0.1"}  # not the object Consul writes
    assert instance_from_entry(entry(TaggedAddresses=broken), "dc1").virtual_ip == ""


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


def test_json_body() -> None:
    assert json_body(HTTPResult(200, '{"web": []}')) == {"web": []}
    with pytest.raises(BadResponse, match="not JSON"):
        json_body(HTTPResult(200, "<html>"))


def test_node_dump_gives_each_service_the_node_checks_and_its_own() -> None:
    body = [
        {
            "Node": "n1",
            "Address": "10.0.0.1",
            "Services": [
                {"ID": "web-1", "Service": "Web", "Port": 80, "Weights": {"Passing": 5}},
                {"ID": "db-1", "Service": "db", "Port": 5432},
                {"ID": "bare", "Service": "bare", "Port": 1},  # registered without checks
            ],
            "Checks": [
                {"CheckID": "serfHealth", "ServiceID": "", "Status": WARNING},
                {"CheckID": "service:web-1", "ServiceID": "web-1", "Status": PASSING},
                {"CheckID": "service:db-1", "ServiceID": "db-1", "Status": CRITICAL},
            ],
        },
        {"Node": "n2", "Address": "10.0.0.2", "Services": [], "Checks": []},
        {"Node": "n3", "Address": "10.0.0.3", "Services": [{"ID": "web-3", "Service": "web"}]},
    ]
    found = services_from_dump(body, "dc1")
    assert sorted(found) == ["bare", "db", "web"]
    web1, web3 = found["web"]
    assert (web1.node.name, web1.status, web1.weight_passing) == ("n1", WARNING, 5)
    assert (web3.node.name, web3.status, web3.effective_address) == ("n3", PASSING, "10.0.0.3")
    assert found["db"][0].status == CRITICAL
    assert found["bare"][0].status == WARNING  # only the node's check
    assert web1.node == Node("n1", "10.0.0.1", "dc1")


@pytest.mark.parametrize("body", [{}, [{"Node": "n1", "Services": {"a": 1}}], [{"Services": []}]])
def test_malformed_node_dumps_are_rejected(body: Any) -> None:
    with pytest.raises(BadResponse):
        services_from_dump(body, "dc1")
