"""1,000 watched services under Consul's default per-client connection limit.

Beyond the blocking-read slots (120 of the default 150 connections), service
watches are served by one node-dump read per datacenter (gateway/consul/dumps.py)
instead of taking turns at 5 s reads. Asserted here on state and counts, not
latency: the gateway holds a handful of connections to Consul and makes a
handful of requests at idle (taking turns, it held 150 and made ~24 per
second), and every kind of change still shows in DNS. How fast is measured by
``python -m bench.freshness --services 1000``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dns.rcode
import pytest

from harness.consul import ConsulAgent
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import process_tree, tcp_connections_to, wait_for
from tests.support.dnsclient import query

pytestmark = pytest.mark.timeout(240)

SERVICES = 1000
NODE = "scale1"
NODE_ADDRESS = "127.0.0.70"
# Bounded waits for state; a change shows in milliseconds on an idle machine.
LOAD_TIMEOUT_S = 90.0
CHANGE_TIMEOUT_S = 20.0
# Idle window over which requests are counted. Taking turns, 1,000 watches made
# about 24 requests/s (120 slots x one 5 s read each); node dumps make ~0 (the
# datacenter probe runs every 30 s).
IDLE_WINDOW_S = 5.0
MAX_IDLE_REQUESTS = 6
# Connections to Consul: the probe, two lists and one dump per datacenter, plus
# first queries in flight; taking turns it was the whole pool (150).
MAX_CONNECTIONS_HELD = 12


def name(i: int) -> str:
    return f"s{i:04d}"


def service(i: int, **fields: Any) -> dict[str, Any]:
    return {"ID": name(i), "Service": name(i), "Port": 1000 + i, **fields}


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent() as a:
        a.catalog_register(NODE, NODE_ADDRESS)
        # Batched catalog registrations without checks (16 transactions).
        a.catalog_register_services(NODE, [service(i) for i in range(SERVICES)])
        yield a


@pytest.fixture(scope="module")
def gateway(agent: ConsulAgent, knot: KnotUpstream) -> Iterator[ConsulGateway]:
    with ConsulGateway(agent.http_addr, knot.address, "--consul-watch-all") as gw:
        wait_for(
            lambda: gw.metrics().get("consul_services_loaded", 0) > SERVICES,
            timeout=LOAD_TIMEOUT_S,
            message="the gateway loading every service (1,000 and consul)",
        )
        yield gw


def answer(gw: ConsulGateway, qname: str, rdtype: str) -> set[str] | None:
    """The answer's records as text; None for NXDOMAIN."""
    msg = query(gw.host, gw.port, qname, rdtype)
    if msg.rcode() == dns.rcode.NXDOMAIN:
        return None
    assert msg.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(msg.rcode())
    return {rr.to_text() for rrset in msg.answer for rr in rrset}


def shows(gw: ConsulGateway, qname: str, rdtype: str, expected: set[str] | None) -> None:
    wait_for(
        lambda: answer(gw, qname, rdtype) == expected or None,
        timeout=CHANGE_TIMEOUT_S,
        message=f"{qname} {rdtype} answering {expected}",
    )


def srv(i: int, *, weight: int = 1, port: int | None = None) -> set[str]:
    return {f"1 {weight} {port or 1000 + i} {NODE}.node.dc1.consul."}


def test_watches_hold_few_connections_and_make_few_requests(
    agent: ConsulAgent, gateway: ConsulGateway
) -> None:
    assert gateway.pid is not None
    held = tcp_connections_to(int(agent.http_addr.rsplit(":", 1)[1]), process_tree(gateway.pid))
    assert sum(held.values()) <= MAX_CONNECTIONS_HELD, held
    before = gateway.metrics()["consul_http_requests_total"]
    time.sleep(IDLE_WINDOW_S)  # a window to count requests in, not a wait for a state
    metrics = gateway.metrics()
    requests = metrics["consul_http_requests_total"] - before
    assert requests <= MAX_IDLE_REQUESTS, f"{requests} requests in {IDLE_WINDOW_S} s"
    assert metrics["consul_watched_services"] > SERVICES
    assert metrics["consul_node_dumps"] == 1
    # The most requests in flight at once, ever: bounded, not one per service.
    assert metrics["consul_http_inflight_peak"] <= MAX_CONNECTIONS_HELD


@pytest.mark.parametrize(
    ("label", "change", "qname", "rdtype", "expected"),
    [
        (
            "port and weight",
            lambda a: a.catalog_register(
                NODE, NODE_ADDRESS, service=service(10, Port=2010, Weights={"Passing": 7})
            ),
            f"{name(10)}.service.consul",
            "SRV",
            srv(10, weight=7, port=2010),
        ),
        (
            "tag",
            lambda a: a.catalog_register(NODE, NODE_ADDRESS, service=service(11, Tags=["blue"])),
            f"blue.{name(11)}.service.consul",
            "SRV",
            srv(11),
        ),
        (
            "service address",
            lambda a: a.catalog_register(
                NODE, NODE_ADDRESS, service=service(12, Address="127.0.0.72")
            ),
            f"{name(12)}.service.consul",
            "A",
            {"127.0.0.72"},
        ),
        (
            "deregistration",
            lambda a: a.catalog_deregister(NODE, service_id=name(13)),
            f"{name(13)}.service.consul",
            "A",
            None,
        ),
        (
            "registration without checks",
            lambda a: a.catalog_register(
                "scale2", "127.0.0.73", service={"Service": "newcomer", "Port": 1}
            ),
            "newcomer.service.consul",
            "A",
            {"127.0.0.73"},
        ),
        (
            "failing check",
            lambda a: a.catalog_register(
                NODE,
                NODE_ADDRESS,
                service=service(14),
                checks=[{"CheckID": "c14", "ServiceID": name(14), "Status": "critical"}],
            ),
            f"{name(14)}.service.consul",
            "A",
            None,  # no healthy instance: NXDOMAIN, as Consul's DNS answers
        ),
    ],
)
def test_every_kind_of_change_shows(
    agent: ConsulAgent,
    gateway: ConsulGateway,
    label: str,
    change: Callable[[ConsulAgent], object],
    qname: str,
    rdtype: str,
    expected: set[str] | None,
) -> None:
    assert answer(gateway, qname, rdtype) != expected, label
    change(agent)
    shows(gateway, qname, rdtype, expected)


def test_node_address_change_shows(agent: ConsulAgent, gateway: ConsulGateway) -> None:
    qname = f"{name(20)}.service.consul"
    assert answer(gateway, qname, "A") == {NODE_ADDRESS}
    agent.catalog_register(NODE, "127.0.0.71")
    try:
        shows(gateway, qname, "A", {"127.0.0.71"})
    finally:
        agent.catalog_register(NODE, NODE_ADDRESS)
    shows(gateway, qname, "A", {NODE_ADDRESS})
