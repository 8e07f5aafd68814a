"""``--workers N`` and Consul: one watcher serves every worker (issue 11).

Counted on Consul's side (the agent's own telemetry: completed GETs per
endpoint) and from /proc (which processes hold connections to Consul), so
the count does not depend on how the gateway reports it: with two workers
Consul gets the requests of one client, and both workers answer a change.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from harness.consul import GATEWAY_GET_PATHS, TELEMETRY_HCL, ConsulAgent
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import process_tree, tcp_connections_to, wait_for

pytestmark = pytest.mark.timeout(180)

SERVICES = 10
# Source ports per round of questions: SO_REUSEPORT hashes each 4-tuple to a worker,
# so 16 ports reach both of two workers with probability 1 - 2 x 2^-16.
CLIENT_SOCKETS = 16
# Requests the watcher may differ by between runs: a blocking read that happened to
# return (Consul's wait jitter) or the 30 s datacenter probe.
REQUEST_SLACK = 4
STATE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent(hcl=[TELEMETRY_HCL]) as a:
        for i in range(SERVICES):
            a.register_service(f"svc{i}", service_id=f"svc{i}-0", address="127.0.0.80", port=80)
        yield a


def consul_gets(agent: ConsulAgent) -> int:
    """GETs of the gateway's endpoints that Consul has answered so far."""
    return agent.answered_gets(GATEWAY_GET_PATHS)


def ask_all(gw: ConsulGateway, qname: str) -> list[int]:
    """The rcode of ``qname`` A from every client socket (so from every worker)."""
    rcodes: list[int] = []
    for _ in range(CLIENT_SOCKETS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            msg = dns.message.make_query(qname, "A")
            sock.sendto(msg.to_wire(), (gw.host, gw.port))
            reply = dns.message.from_wire(sock.recv(4096))
            rcodes.append(reply.rcode())
    return rcodes


def run_workers(agent: ConsulAgent, knot: KnotUpstream, workers: int) -> tuple[int, int]:
    """Consul GETs to serve every service through every worker, and the processes
    holding connections to Consul."""
    before = consul_gets(agent)
    args = ("--workers", str(workers))
    with ConsulGateway(agent.http_addr, knot.address, *args) as gw:
        for i in range(SERVICES):
            qname = f"svc{i}.service.consul"
            wait_for(
                lambda: set(ask_all(gw, qname)) == {dns.rcode.NOERROR},  # noqa: B023 (now)
                timeout=STATE_TIMEOUT_S,
                message=f"{qname} answered by every worker",
            )
        assert gw.pid is not None
        held = tcp_connections_to(int(agent.http_addr.rsplit(":", 1)[1]), process_tree(gw.pid))
        requests = consul_gets(agent) - before
        if workers > 1:
            both_answer_a_change(agent, gw, workers)
    return requests, sum(1 for n in held.values() if n)


def both_answer_a_change(agent: ConsulAgent, gw: ConsulGateway, workers: int) -> None:
    """A failing check reaches every worker: each one's UDP counter moves while all
    the answers are NXDOMAIN."""
    agent.set_check("service:svc0-0", "critical")
    try:
        wait_for(
            lambda: set(ask_all(gw, "svc0.service.consul")) == {dns.rcode.NXDOMAIN},
            timeout=STATE_TIMEOUT_S,
            message="svc0 NXDOMAIN from every worker",
        )
        counts = [gw.metrics(worker=w)['queries_total{transport="udp"}'] for w in range(workers)]
        assert set(ask_all(gw, "svc0.service.consul")) == {dns.rcode.NXDOMAIN}
        after = [gw.metrics(worker=w)['queries_total{transport="udp"}'] for w in range(workers)]
        assert all(a > b for a, b in zip(after, counts, strict=True)), (counts, after)
    finally:
        agent.set_check("service:svc0-0", "pass")


def test_two_workers_cost_consul_what_one_does(agent: ConsulAgent, knot: KnotUpstream) -> None:
    one, one_holders = run_workers(agent, knot, 1)
    two, two_holders = run_workers(agent, knot, 2)
    assert one_holders == 1
    assert two_holders == 1, "one process (the watcher) talks to Consul"
    assert one > SERVICES  # each service was read
    assert two <= one + REQUEST_SLACK, (one, two)
