"""Changes in Consul reach the gateway's answers (blocking queries, no polling delay).

Only that the change happens is asserted; how fast is measured by
``python -m bench.freshness`` (p50/p99 over many changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import dns.rcode
import pytest

from harness.consul import ConsulAgent
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import wait_for
from tests.support.dnsclient import query

pytestmark = pytest.mark.timeout(60)

# Generous: on loopback a change shows in milliseconds; CI machines can be slow.
CHANGE_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent() as a:
        yield a


@pytest.fixture(scope="module")
def gateway(agent: ConsulAgent, knot: KnotUpstream) -> Iterator[ConsulGateway]:
    with ConsulGateway(agent.http_addr, knot.address) as gw:
        wait_for(
            lambda: query(gw.host, gw.port, "dev1.node.consul", "A").answer,
            timeout=15,
            message="gateway's first view of Consul",
        )
        yield gw


def addresses(gw: ConsulGateway, name: str) -> set[str] | None:
    """The A records of ``name``; None for NXDOMAIN."""
    msg = query(gw.host, gw.port, name, "A")
    if msg.rcode() == dns.rcode.NXDOMAIN:
        return None
    assert msg.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(msg.rcode())
    return {rr.to_text() for rrset in msg.answer for rr in rrset}


def changes_to(
    gw: ConsulGateway, name: str, expected: set[str] | None, change: Callable[[], object]
) -> float:
    """Apply ``change`` and wait until ``name`` answers ``expected``; seconds taken."""
    start = time.monotonic()
    change()
    wait_for(
        lambda: addresses(gw, name) == expected or None,
        timeout=CHANGE_TIMEOUT_S,
        interval=0.005,
        message=f"{name} to answer {expected}",
    )
    return time.monotonic() - start


def deregister(agent: ConsulAgent, *service_ids: str) -> None:
    for service_id in service_ids:
        agent.deregister_service(service_id)


def test_check_flips_deregistration_and_registration(
    agent: ConsulAgent, gateway: ConsulGateway
) -> None:
    name = "fresh.service.consul"
    agent.register_service("fresh", service_id="f0", address="127.0.0.30", port=1)
    agent.register_service("fresh", service_id="f1", address="127.0.0.31", port=1)
    both = {"127.0.0.30", "127.0.0.31"}
    wait_for(lambda: addresses(gateway, name) == both, timeout=CHANGE_TIMEOUT_S)

    took = {
        "critical": changes_to(
            gateway, name, {"127.0.0.30"}, lambda: agent.set_check("service:f1", "critical")
        ),
        "passing": changes_to(gateway, name, both, lambda: agent.set_check("service:f1", "pass")),
        "maintenance": changes_to(
            gateway, name, {"127.0.0.30"}, lambda: agent.maintenance("f1", True)
        ),
        "maintenance off": changes_to(gateway, name, both, lambda: agent.maintenance("f1", False)),
        "deregister": changes_to(
            gateway, name, {"127.0.0.30"}, lambda: agent.deregister_service("f1")
        ),
        "register": changes_to(
            gateway,
            name,
            {"127.0.0.30", "127.0.0.32"},
            lambda: agent.register_service("fresh", service_id="f2", address="127.0.0.32", port=1),
        ),
        "last instance gone": changes_to(
            gateway,
            name,
            None,
            lambda: deregister(agent, "f0", "f2"),
        ),
    }
    print("change seen after (ms):", {k: round(v * 1000, 1) for k, v in took.items()})


def test_service_known_absent_then_registered(agent: ConsulAgent, gateway: ConsulGateway) -> None:
    name = "late.service.consul"
    assert addresses(gateway, name) is None  # NXDOMAIN, and now cached as such
    changes_to(
        gateway,
        name,
        {"127.0.0.33"},
        lambda: agent.register_service("late", address="127.0.0.33", port=1),
    )
    agent.deregister_service("late")


def test_node_registration_and_meta_change(agent: ConsulAgent, gateway: ConsulGateway) -> None:
    node = "ext-fresh.node.consul"
    assert addresses(gateway, node) is None
    changes_to(
        gateway,
        node,
        {"127.0.0.34"},
        lambda: agent.catalog_register("ext-fresh", "127.0.0.34", node_meta={"v": "1"}),
    )
    agent.catalog_register("ext-fresh", "127.0.0.34", node_meta={"v": "2"})
    wait_for(
        lambda: (
            {
                rr.to_text()
                for rrset in query(gateway.host, gateway.port, node, "TXT").answer
                for rr in rrset
            }
            == {'"v=2"'}
        ),
        timeout=CHANGE_TIMEOUT_S,
        message="new node meta in TXT",
    )
    changes_to(gateway, node, None, lambda: agent.catalog_deregister("ext-fresh"))


def test_prepared_query_follows_its_service_after_its_ttl(
    agent: ConsulAgent, gateway: ConsulGateway
) -> None:
    agent.register_service("pqsvc", service_id="p0", address="127.0.0.35", port=1)
    agent.create_prepared_query("pq-fresh", "pqsvc", ttl="1s")
    name = "pq-fresh.query.consul"
    wait_for(lambda: addresses(gateway, name) == {"127.0.0.35"}, timeout=CHANGE_TIMEOUT_S)
    # Kept for its DNS TTL (1 s), then executed again on the next query.
    changes_to(
        gateway,
        name,
        {"127.0.0.35", "127.0.0.36"},
        lambda: agent.register_service("pqsvc", service_id="p1", address="127.0.0.36", port=1),
    )


def test_idle_service_is_unwatched_and_fetched_again(
    agent: ConsulAgent, knot: KnotUpstream
) -> None:
    agent.register_service("idle", address="127.0.0.37", port=1)
    with ConsulGateway(agent.http_addr, knot.address, "--consul-idle-unwatch", "1") as gw:
        name = "idle.service.consul"
        wait_for(lambda: addresses(gw, name) == {"127.0.0.37"}, timeout=CHANGE_TIMEOUT_S)
        assert gw.metrics()["consul_watched_services"] == 1
        wait_for(
            lambda: gw.metrics()["consul_watched_services"] == 0,
            timeout=5,
            message="the idle service's watch to stop",
        )
        fetches = gw.metrics()["consul_first_fetches_total"]
        # Still answered, and correctly, after a change made while nobody watched.
        agent.register_service("idle", service_id="idle2", address="127.0.0.38", port=1)
        wait_for(
            lambda: addresses(gw, name) == {"127.0.0.37", "127.0.0.38"},
            timeout=CHANGE_TIMEOUT_S,
        )
        assert gw.metrics()["consul_first_fetches_total"] > fetches


def test_watch_all_watches_every_service_up_front(agent: ConsulAgent, knot: KnotUpstream) -> None:
    agent.register_service("eager-a", address="127.0.0.39", port=1)
    agent.register_service("eager-b", address="127.0.0.40", port=1)
    wait_for(lambda: {"eager-a", "eager-b"} <= set(agent.get("/v1/catalog/services")))
    with ConsulGateway(agent.http_addr, knot.address, "--consul-watch-all") as gw:
        services = set(agent.get("/v1/catalog/services"))
        wait_for(
            lambda: gw.metrics()["consul_services_loaded"] == len(services),
            timeout=CHANGE_TIMEOUT_S,
            message=f"all {len(services)} services watched and loaded",
        )
        assert addresses(gw, "eager-a.service.consul") == {"127.0.0.39"}
        assert gw.metrics()["consul_first_fetches_total"] == 0
