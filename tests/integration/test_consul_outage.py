"""Consul away: at start-up, and after the gateway had a good view."""

from __future__ import annotations

import time

import dns.rcode
import pytest

from harness import zone
from harness.consul import ConsulAgent
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import wait_for
from tests.support.dnsclient import query, values

pytestmark = pytest.mark.timeout(90)

MAX_AGE_S = 2.0


def rcode(gw: ConsulGateway, name: str, rdtype: str = "A") -> str:
    return dns.rcode.to_text(query(gw.host, gw.port, name, rdtype).rcode())


def a_records(gw: ConsulGateway, name: str) -> set[str]:
    return values(query(gw.host, gw.port, name, "A"), name, "A")


def test_consul_down_at_start_then_up(knot: KnotUpstream) -> None:
    agent = ConsulAgent()  # ports chosen, process not started yet
    try:
        with ConsulGateway(agent.http_addr, knot.address) as gw:
            # Up without Consul: other names are forwarded...
            assert values(query(gw.host, gw.port, zone.WWW, "A"), zone.WWW, "A") == {zone.WWW_A}
            # ...Consul names fail rather than claim anything about the catalog.
            for name in ("web.service.consul", "dev1.node.consul", "pq.query.consul"):
                assert rcode(gw, name) == "SERVFAIL", name
            assert gw.metrics()["consul_up"] == 0
            assert gw.metrics()["consul_view_available"] == 0

            agent.start()
            agent.register_service("web", address="127.0.0.10", port=80)
            # The watchers retry with backoff (at most 10 s apart).
            wait_for(
                lambda: a_records(gw, "web.service.consul.") == {"127.0.0.10"},
                timeout=20,
                message="answers once Consul is up",
            )
            assert rcode(gw, "dev1.node.consul") == "NOERROR"
            assert gw.metrics()["consul_up"] == 1
    finally:
        agent.stop()


def test_last_good_view_then_servfail_after_max_age(knot: KnotUpstream) -> None:
    with ConsulAgent() as agent:
        agent.register_service("web", address="127.0.0.10", port=80)
        agent.register_service("other", address="127.0.0.11", port=80)
        with ConsulGateway(
            agent.http_addr, knot.address, "--consul-view-max-age", str(MAX_AGE_S)
        ) as gw:
            wait_for(lambda: a_records(gw, "web.service.consul.") == {"127.0.0.10"}, timeout=15)

            agent.kill()
            killed = time.monotonic()
            # Until the view is MAX_AGE_S old: answers as before, from memory.
            while time.monotonic() - killed < MAX_AGE_S * 0.75:
                assert a_records(gw, "web.service.consul.") == {"127.0.0.10"}
                assert rcode(gw, "dev1.node.consul") == "NOERROR"
                # Known absent in the last good view: still NXDOMAIN.
                assert rcode(gw, "nope.service.consul") == "NXDOMAIN"
                time.sleep(0.05)
            # A service the view never fetched cannot be fetched now.
            assert rcode(gw, "other.service.consul") == "SERVFAIL"
            metrics = gw.metrics()
            assert metrics["consul_up"] == 0
            assert metrics["consul_view_available"] == 1
            assert metrics["consul_view_age_seconds"] > 0

            wait_for(
                lambda: rcode(gw, "web.service.consul") == "SERVFAIL",
                timeout=MAX_AGE_S + 5,
                message="SERVFAIL once the view is too old",
            )
            assert time.monotonic() - killed >= MAX_AGE_S * 0.9
            assert rcode(gw, "dev1.node.consul") == "SERVFAIL"
            assert gw.metrics()["consul_view_available"] == 0
            assert gw.metrics()["consul_view_age_seconds"] >= MAX_AGE_S
            # Forwarding is not affected.
            assert values(query(gw.host, gw.port, zone.WWW, "A"), zone.WWW, "A") == {zone.WWW_A}

            # A restarted dev agent is empty and its index starts low again:
            # the gateway must take its state, not wait for its old index.
            agent.start()
            # A new instance: the agent restores the old one with its TTL check
            # critical (so Consul's DNS leaves it out too).
            agent.register_service("web", service_id="web-new", address="127.0.0.12", port=80)
            wait_for(
                lambda: a_records(gw, "web.service.consul.") == {"127.0.0.12"},
                timeout=20,
                message="the restarted agent's catalog",
            )
            assert rcode(gw, "other.service.consul") == "NXDOMAIN"
