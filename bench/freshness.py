"""``python -m bench.freshness``: how soon a change in Consul shows in the gateway's answers.

Starts on loopback a Consul dev agent, a Knot upstream and the gateway (``--consul``),
registers a service with two instances, then makes ``--changes`` changes one after the
other, cycling through: instance check critical, passing again, instance deregistered,
registered again. For each, the clock starts before the HTTP call that makes the change
and stops when the gateway's A answer (polled every millisecond over UDP) shows it.

Prints p50/p90/p99/max, the Consul HTTP requests the gateway made per change (from its
metrics endpoint), and the requests it makes at idle over ``--idle`` seconds. The target
is p99 < 250 ms on loopback; the exit status is 1 when it is missed.

``--services 1000`` is the scale mode: as many services in all (the timed one, Consul's
own and fillers registered in the catalog by transactions), watched from the start
(``--consul-watch-all``), and it also prints the TCP connections the gateway holds to
Consul and the most requests it had in flight. ``--consul-limit`` sets Consul's
``limits.http_max_conns_per_client`` and ``--max-connections`` the gateway's
``--consul-max-connections`` (to measure raising both instead); ``--workers`` runs that
many answering processes (one Consul watcher serves them all).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import dns.message
import dns.rdatatype

from harness.consul import ConsulAgent, consul_binary
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import process_tree, tcp_connections_to, wait_for

TARGET_P99_MS = 250.0
POLL_INTERVAL_S = 0.001
CHANGE_TIMEOUT_S = 10.0
SERVICE = "fresh"
NAME = f"{SERVICE}.service.consul."
KEEP = ("f0", "127.0.0.60")
FLIP = ("f1", "127.0.0.61")
FILLER_NODE = ("filler", "127.0.0.62")
# Services the dev agent has before any is registered: "consul".
OWN_SERVICES = 1
LOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Change:
    label: str
    apply: Callable[[], object]
    expected: frozenset[str]


class Poller:
    """Asks the gateway for NAME's A records over one UDP socket."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((host, port))
        self.sock.settimeout(1.0)

    def addresses(self) -> frozenset[str]:
        msg = dns.message.make_query(NAME, "A")
        self.sock.send(msg.to_wire())
        while True:
            reply = dns.message.from_wire(self.sock.recv(65535))
            if reply.id == msg.id:
                break
        return frozenset(
            rd.to_text()
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.A
            for rd in rrset
        )

    def wait_for(self, expected: frozenset[str]) -> None:
        deadline = time.perf_counter() + CHANGE_TIMEOUT_S
        while self.addresses() != expected:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{NAME} never answered {sorted(expected)}")
            time.sleep(POLL_INTERVAL_S)


def cycle(agent: ConsulAgent) -> list[Change]:
    both = frozenset({KEEP[1], FLIP[1]})
    one = frozenset({KEEP[1]})
    sid, address = FLIP
    return [
        Change("check critical", lambda: agent.set_check(f"service:{sid}", "critical"), one),
        Change("check passing", lambda: agent.set_check(f"service:{sid}", "pass"), both),
        Change("deregister", lambda: agent.deregister_service(sid), one),
        Change(
            "register",
            lambda: agent.register_service(SERVICE, service_id=sid, address=address, port=1),
            both,
        ),
    ]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Setup:
    """What runs: services in all, Consul's per-client limit, gateway options."""

    services: int = 2
    consul_limit: int | None = None
    max_connections: int | None = None
    workers: int = 1

    def hcl(self) -> list[str]:
        if self.consul_limit is None:
            return []
        return [f"limits {{ http_max_conns_per_client = {self.consul_limit} }}"]

    def gateway_args(self) -> list[str]:
        args = ["--consul-watch-all"] if self.services > 2 else []
        if self.max_connections is not None:
            args += ["--consul-max-connections", str(self.max_connections)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        return args

    def describe(self) -> str:
        limit = self.consul_limit or 200
        gateway = self.max_connections or 150
        mode = " (watch-all)" if self.services > 2 else ""
        return (
            f"{self.services} services{mode}, Consul's http_max_conns_per_client "
            f"{limit}, --consul-max-connections {gateway}, {self.workers} worker(s)"
        )


def register_fillers(agent: ConsulAgent, count: int) -> None:
    """``count`` more services on one catalog node (no checks), by transactions."""
    node, address = FILLER_NODE
    agent.catalog_register(node, address)
    fillers = [{"ID": f"x{i}", "Service": f"x{i}", "Port": 1} for i in range(count)]
    agent.catalog_register_services(node, fillers)


def run(changes: int, idle_s: float, setup: Setup) -> int:
    with ConsulAgent(hcl=setup.hcl()) as agent, KnotUpstream() as knot:
        for sid, address in (KEEP, FLIP):
            agent.register_service(SERVICE, service_id=sid, address=address, port=1)
        fillers = setup.services - OWN_SERVICES - 1
        if fillers > 0:
            register_fillers(agent, fillers)
        with ConsulGateway(agent.http_addr, knot.address, *setup.gateway_args()) as gw:
            poller = Poller(gw.host, gw.port)
            wait_for(lambda: poller.addresses() == {KEEP[1], FLIP[1]}, timeout=15)
            if fillers > 0:
                wait_for(
                    lambda: gw.metrics()["consul_services_loaded"] >= setup.services,
                    timeout=LOAD_TIMEOUT_S,
                    message=f"the gateway loading {setup.services} services",
                )
            time.sleep(0.5)  # let the first fetch's follow-up blocking reads go out
            steps = cycle(agent)
            before = gw.metrics()["consul_http_requests_total"]
            took_ms: dict[str, list[float]] = {step.label: [] for step in steps}
            for i in range(changes):
                step = steps[i % len(steps)]
                start = time.perf_counter()
                step.apply()
                poller.wait_for(step.expected)
                took_ms[step.label].append((time.perf_counter() - start) * 1000)
            time.sleep(0.5)  # the last change's follow-up reads
            metrics = gw.metrics()
            per_change = (metrics["consul_http_requests_total"] - before) / changes

            idle_start = metrics["consul_http_requests_total"]
            time.sleep(idle_s)
            idle = gw.metrics()
            idle_requests = idle["consul_http_requests_total"] - idle_start
            assert gw.pid is not None
            consul_port = int(agent.http_addr.rsplit(":", 1)[1])
            held = tcp_connections_to(consul_port, process_tree(gw.pid))

    samples = [ms for values in took_ms.values() for ms in values]
    p50, p90, p99 = (percentile(samples, q) for q in (0.5, 0.9, 0.99))
    print(
        f"freshness, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Consul dev agent "
        f"({consul_binary().rsplit('/', 1)[-1]}) on loopback, {changes} changes; "
        f"{setup.describe()}"
    )
    print(
        f"  all changes      p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  p99 {p99:6.1f} ms  "
        f"max {max(samples):6.1f} ms  (target p99 < {TARGET_P99_MS:g} ms)"
    )
    for label, values in took_ms.items():
        print(
            f"  {label:16} p50 {statistics.median(values):6.1f} ms  "
            f"p99 {percentile(values, 0.99):6.1f} ms  n={len(values)}"
        )
    watched = int(idle["consul_watched_services"])
    print(f"  Consul HTTP requests per change: {per_change:.2f}")
    print(
        f"  TCP connections to Consul at idle: {sum(held.values())} "
        f"({sum(1 for n in held.values() if n)} process(es)); most requests in flight at once: "
        f"{idle.get('consul_http_inflight_peak', float('nan')):g}; node dumps: "
        f"{'yes' if idle.get('consul_node_dumps') else 'no'}"
    )
    print(
        f"  Consul HTTP requests at idle: {idle_requests:g} in {idle_s:g} s "
        f"({idle_requests * 60 / idle_s:.1f}/min) with {watched} watched service(s) "
        f"and 1 datacenter (blocking reads, consul_wait 60 s)"
    )
    return 0 if p99 < TARGET_P99_MS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    parser.add_argument("--changes", type=int, default=200, help="changes to time (>= 100)")
    parser.add_argument("--idle", type=float, default=65.0, help="seconds of idle to count")
    parser.add_argument(
        "--services", type=int, default=2, help="services in all (scale mode above 2)"
    )
    parser.add_argument("--consul-limit", type=int, help="Consul's http_max_conns_per_client")
    parser.add_argument("--max-connections", type=int, help="--consul-max-connections")
    parser.add_argument("--workers", type=int, default=1, help="gateway --workers")
    args = parser.parse_args(argv)
    if args.changes < 4 or args.idle <= 0:
        parser.error("--changes must be at least 4 and --idle positive")
    if not 2 <= args.services <= 100_000 or not 1 <= args.workers <= 64:
        parser.error("--services must be 2-100000 and --workers 1-64")
    setup = Setup(args.services, args.consul_limit, args.max_connections, args.workers)
    return run(args.changes, args.idle, setup)


if __name__ == "__main__":
    sys.exit(main())
