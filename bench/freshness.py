"""``python -m bench.freshness``: how soon a change in Consul shows in the gateway's answers.

Starts on loopback a Consul dev agent, a Knot upstream and the gateway (``--consul``),
registers a service with two instances, then makes ``--changes`` changes one after the
other, cycling through: instance check critical, passing again, instance deregistered,
registered again. For each, the clock starts before the HTTP call that makes the change
and stops when the gateway's A answer (polled every millisecond over UDP) shows it.

Prints p50/p90/p99/max, the Consul HTTP requests the gateway made per change (from its
metrics endpoint), and the requests it makes at idle over ``--idle`` seconds. The target
is p99 < 250 ms on loopback; the exit status is 1 when it is missed.
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
from harness.process import wait_for

TARGET_P99_MS = 250.0
POLL_INTERVAL_S = 0.001
CHANGE_TIMEOUT_S = 10.0
SERVICE = "fresh"
NAME = f"{SERVICE}.service.consul."
KEEP = ("f0", "127.0.0.60")
FLIP = ("f1", "127.0.0.61")


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


def run(changes: int, idle_s: float) -> int:
    with ConsulAgent() as agent, KnotUpstream() as knot:
        for sid, address in (KEEP, FLIP):
            agent.register_service(SERVICE, service_id=sid, address=address, port=1)
        with ConsulGateway(agent.http_addr, knot.address) as gw:
            poller = Poller(gw.host, gw.port)
            wait_for(lambda: poller.addresses() == {KEEP[1], FLIP[1]}, timeout=15)
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

    samples = [ms for values in took_ms.values() for ms in values]
    p50, p90, p99 = (percentile(samples, q) for q in (0.5, 0.9, 0.99))
    print(
        f"freshness, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Consul dev agent "
        f"({consul_binary().rsplit('/', 1)[-1]}) on loopback, {changes} changes"
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
        f"  Consul HTTP requests at idle: {idle_requests:g} in {idle_s:g} s "
        f"({idle_requests * 60 / idle_s:.1f}/min) with {watched} watched service(s) "
        f"and 1 datacenter (blocking reads, consul_wait 60 s)"
    )
    return 0 if p99 < TARGET_P99_MS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    parser.add_argument("--changes", type=int, default=200, help="changes to time (>= 100)")
    parser.add_argument("--idle", type=float, default=65.0, help="seconds of idle to count")
    args = parser.parse_args(argv)
    if args.changes < 4 or args.idle <= 0:
        parser.error("--changes must be at least 4 and --idle positive")
    return run(args.changes, args.idle)


if __name__ == "__main__":
    sys.exit(main())
