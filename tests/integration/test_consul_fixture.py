"""The Consul test tooling itself works: a real dev agent answers DNS as the gateway's
tests expect, and a real three-server cluster survives the loss of its leader."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rdatatype
import pytest

from harness.consul import ConsulAgent, ConsulCluster
from harness.process import wait_for


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent() as a:
        yield a


def consul_dns(agent: ConsulAgent, name: str, rdtype: str) -> dns.message.Message:
    """Ask Consul's own DNS (the tests' reference) directly over UDP."""
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=agent.dns_port, timeout=2.0)


def a_records(agent: ConsulAgent, name: str) -> set[str]:
    response = consul_dns(agent, name, "A")
    return {rr.address for rrset in response.answer for rr in rrset if rr.rdtype == dns.rdatatype.A}


def test_agent_attributes(agent: ConsulAgent) -> None:
    assert agent.running
    assert agent.http_addr == f"http://127.0.0.1:{agent.http_port}"
    assert agent.datacenter == "dc1"
    assert agent.leader() == agent.server_addr
    assert agent.node_name in {n["Node"] for n in agent.catalog_nodes()}


def test_consul_dns_answers_registered_instances(agent: ConsulAgent) -> None:
    for i, address in enumerate(["127.0.0.10", "127.0.0.11"]):
        agent.register_service(
            "web",
            service_id=f"web{i}",
            address=address,
            port=8080 + i,
            tags=["v1", "primary"] if i == 0 else ["v1"],
            weights={"Passing": 3, "Warning": 1},
        )
    try:
        # Agent registrations reach the catalog through anti-entropy: wait, don't assume.
        wait_for(
            lambda: a_records(agent, "web.service.consul") == {"127.0.0.10", "127.0.0.11"},
            timeout=10,
            message="both web instances in Consul's DNS",
        )

        srv = consul_dns(agent, "_web._tcp.service.consul", "SRV")
        records = [rr for rrset in srv.answer for rr in rrset if rr.rdtype == dns.rdatatype.SRV]
        assert sorted(rr.port for rr in records) == [8080, 8081]
        assert {rr.weight for rr in records} == {3}
        # Consul puts the instances' addresses in the additional section.
        extra = {
            rr.address for rrset in srv.additional for rr in rrset if rr.rdtype == dns.rdatatype.A
        }
        assert extra == {"127.0.0.10", "127.0.0.11"}

        # A warning instance stays in DNS (only_passing is off) with the Warning weight...
        agent.set_check("service:web1", "warn")
        wait_for(
            lambda: (
                {
                    rr.weight
                    for rrset in consul_dns(agent, "_web._tcp.service.consul", "SRV").answer
                    for rr in rrset
                }
                == {3, 1}
            ),
            timeout=10,
            message="Warning weight in SRV",
        )
        # ...a critical one is dropped.
        agent.set_check("service:web1", "critical")
        wait_for(
            lambda: a_records(agent, "web.service.consul") == {"127.0.0.10"},
            timeout=10,
            message="critical web1 gone from Consul's DNS",
        )
    finally:
        agent.deregister_service("web0")
        agent.deregister_service("web1")


def test_catalog_register_external_ipv6_node(agent: ConsulAgent) -> None:
    agent.catalog_register("ext-v6", "::1", service={"Service": "db", "ID": "db1", "Port": 5432})
    try:
        response = wait_for(
            lambda: consul_dns(agent, "db.service.consul", "AAAA").answer,
            timeout=10,
            message="AAAA for an external IPv6 node",
        )
        assert {rr.address for rrset in response for rr in rrset} == {"::1"}
    finally:
        agent.catalog_deregister("ext-v6")


def test_cluster_elects_new_leader_after_leader_is_killed() -> None:
    with ConsulCluster() as cluster:
        leader = cluster.leader_index()
        assert leader is not None
        cluster.catalog_register("ext1", "127.0.0.20", service={"Service": "db", "Port": 1})

        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = cluster.wait_for_new_leader(excluding=leader, timeout=60)
        assert new_leader != leader
        assert time.monotonic() - killed_at < 60

        # The surviving majority still takes writes and keeps what was written before.
        cluster.catalog_register("ext2", "127.0.0.21", service={"Service": "db", "Port": 1})
        nodes = {e["Node"]["Node"] for e in cluster.api().health_service("db")}
        assert nodes == {"ext1", "ext2"}
