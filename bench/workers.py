"""What ``--workers N`` costs Consul and memory: ``python -m bench.workers``.

Each worker is its own process with its own Consul watcher, so the view is
duplicated, not shared. This measures by how much: Consul HTTP requests (every
worker's ``consul_http_requests_total`` counter, worker i on metrics port + i) at
start-up with every service asked once through each worker, per catalog change,
and at idle; and the resident memory summed over the workers.

Everything runs on loopback: a real Consul dev agent and the gateway as a
subprocess. Bounded: a fixed number of services, changes and idle seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import time

import dns.message

from harness.consul import ConsulAgent
from harness.gateway import ConsulGateway

from .measuring import rss_kb, worker_pids

# Source sockets per service lookup: SO_REUSEPORT hashes the 4-tuple, so
# several client ports reach every worker with high probability.
CLIENT_SOCKETS = 16


def requests_total(gw: ConsulGateway, workers: int) -> float:
    """Consul HTTP requests made so far, summed over the workers."""
    return sum(gw.metrics(worker=i).get("consul_http_requests_total", 0.0) for i in range(workers))


def ask_everywhere(gw: ConsulGateway, names: list[str]) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENT_SOCKETS)]
    try:
        for sock in socks:
            sock.settimeout(3)
            for name in names:
                sock.sendto(dns.message.make_query(name, "A").to_wire(), (gw.host, gw.port))
                sock.recv(4096)
    finally:
        for sock in socks:
            sock.close()


def measure(
    agent: ConsulAgent, workers: int, services: int, changes: int, idle_s: float
) -> dict[str, float]:
    names = [f"svc{i}.service.consul" for i in range(services)]
    with ConsulGateway(agent.http_addr, "127.0.0.1:9", "--workers", str(workers)) as gw:
        assert gw.pid is not None
        pids = worker_pids(gw.pid)
        ask_everywhere(gw, names)
        time.sleep(1.0)
        start = requests_total(gw, workers)
        # Every flip is a real change: critical, then passing again.
        for i in range(changes):
            agent.set_check(f"service:svc{i // 2 % services}-0", "fail" if i % 2 == 0 else "pass")
            time.sleep(0.2)
        time.sleep(1.0)
        after_changes = requests_total(gw, workers)
        time.sleep(idle_s)
        after_idle = requests_total(gw, workers)
        return {
            "workers": workers,
            "startup_requests": start,
            "per_change": (after_changes - start) / changes,
            "idle_per_min": (after_idle - after_changes) / idle_s * 60,
            "rss_mb": rss_kb(pids) / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds measured")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    rows = []
    with ConsulAgent() as agent:
        for i in range(args.services):
            agent.register_service(f"svc{i}", service_id=f"svc{i}-0", port=80)
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(measure(agent, workers, args.services, args.changes, args.idle))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Measured {when} on {os.cpu_count()} CPUs; {args.services} services asked once "
          f"through every worker, {args.changes} check flips, {args.idle:g} s idle")  # fmt: skip
    print("| workers | Consul requests at start | per change | idle per minute | RSS MB |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']:.0f} | {r['startup_requests']:.0f} | {r['per_change']:.2f} "
              f"| {r['idle_per_min']:.1f} | {r['rss_mb']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
