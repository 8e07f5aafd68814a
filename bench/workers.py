"""What ``--workers N`` costs Consul and memory: ``python -m bench.workers``.

With Consul, one watcher process serves every worker (gateway/consul/shared.py), so
Consul should see the requests of one client whatever N is. This counts them on
Consul's side (the agent's own telemetry: GETs of the gateway's endpoints it has
answered) at start-up with every service asked once through each worker, per catalog
change, and at idle; it also counts the gateway's processes that hold connections to
Consul, and gives the resident memory of the answering workers and of the watcher.

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
import dns.rcode

from harness.consul import GATEWAY_GET_PATHS, TELEMETRY_HCL, ConsulAgent
from harness.gateway import ConsulGateway
from harness.process import children, tcp_connections_to

from .measuring import rss_kb

# Source sockets per service lookup: SO_REUSEPORT hashes the 4-tuple, so
# several client ports reach every worker with high probability.
CLIENT_SOCKETS = 16
CHANGE_SPACING_S = 0.2
ANSWER_TRIES = 100
RETRY_S = 0.1
SETTLE_S = 1.0


def ask_everywhere(gw: ConsulGateway, names: list[str]) -> None:
    """Each name from every client socket until it answers NOERROR (the first answers
    are SERVFAIL until the first view is in)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENT_SOCKETS)]
    try:
        for sock in socks:
            sock.settimeout(3)
            for name in names:
                for _ in range(ANSWER_TRIES):
                    sock.sendto(dns.message.make_query(name, "A").to_wire(), (gw.host, gw.port))
                    if dns.message.from_wire(sock.recv(4096)).rcode() == dns.rcode.NOERROR:
                        break
                    time.sleep(RETRY_S)
                else:
                    raise RuntimeError(f"{name} never answered NOERROR")
    finally:
        for sock in socks:
            sock.close()


def measure(
    agent: ConsulAgent, workers: int, services: int, changes: int, idle_s: float
) -> dict[str, float]:
    names = [f"svc{i}.service.consul" for i in range(services)]
    before = agent.answered_gets(GATEWAY_GET_PATHS)
    with ConsulGateway(agent.http_addr, "127.0.0.1:9", "--workers", str(workers)) as gw:
        assert gw.pid is not None
        ask_everywhere(gw, names)
        time.sleep(SETTLE_S)
        start = agent.answered_gets(GATEWAY_GET_PATHS)
        # Every flip is a real change: critical, then passing again.
        for i in range(changes):
            agent.set_check(f"service:svc{i // 2 % services}-0", "fail" if i % 2 == 0 else "pass")
            time.sleep(CHANGE_SPACING_S)
        time.sleep(SETTLE_S)
        after_changes = agent.answered_gets(GATEWAY_GET_PATHS)
        time.sleep(idle_s)
        after_idle = agent.answered_gets(GATEWAY_GET_PATHS)
        procs = children(gw.pid) if workers > 1 else [gw.pid]
        held = tcp_connections_to(int(agent.http_addr.rsplit(":", 1)[1]), procs)
        talking = [pid for pid, count in held.items() if count]
        # One process of N + 1 talking to Consul is the shared watcher; when
        # every worker talks (each its own watcher, as before), there is none.
        watcher = talking if workers > 1 and len(procs) == workers + 1 else []
        answering = [pid for pid in procs if pid not in watcher]
        return {
            "workers": workers,
            "startup_requests": start - before,
            "per_change": (after_changes - start) / changes,
            "idle_per_min": (after_idle - after_changes) / idle_s * 60,
            "clients": len(talking),
            "rss_worker_mb": rss_kb(answering) / 1024 / len(answering),
            "rss_watcher_mb": rss_kb(watcher) / 1024 if watcher else 0.0,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds measured")
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    rows = []
    with ConsulAgent(hcl=[TELEMETRY_HCL]) as agent:
        for i in range(args.services):
            agent.register_service(f"svc{i}", service_id=f"svc{i}-0", port=80)
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(measure(agent, workers, args.services, args.changes, args.idle))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Measured {when} on {os.cpu_count()} CPUs; {args.services} services asked once "
          f"through every worker, {args.changes} check flips, {args.idle:g} s idle; "
          "requests counted by Consul")  # fmt: skip
    print("| workers | processes talking to Consul | Consul requests at start | per change "
          "| idle per minute | RSS per worker MB | watcher RSS MB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        watcher = f"{r['rss_watcher_mb']:.1f}" if r["rss_watcher_mb"] else "-"
        print(f"| {r['workers']:.0f} | {r['clients']:.0f} | {r['startup_requests']:.0f} "
              f"| {r['per_change']:.2f} | {r['idle_per_min']:.1f} | {r['rss_worker_mb']:.1f} "
              f"| {watcher} |")  # fmt: skip


if __name__ == "__main__":
    main()
