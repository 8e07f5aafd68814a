"""The servers under test and the back ends behind them, all with the same data.

Knot serves the generated zone and a Consul dev agent holds the generated catalog; every
peer (the gateway, dnsmasq, Consul's own DNS, CoreDNS) answers from those two, so the
figures compare servers, not data. The processes themselves are ``harness``'s; this
module decides how the benchmark starts and labels them.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from harness.consul import ConsulAgent
from harness.coredns import CoreDNSServer, CoreDNSUnavailable, coredns_binary
from harness.dnsmasq import DnsmasqServer
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.ports import LOOPBACK
from harness.process import ServerProcess
from harness.zone import ZONE

from . import workloads
from .catalog import Catalog, register, wait_registered
from .environment import log

ALL_SERVERS = ("gateway", "dnsmasq", "consul", "coredns")

# Labels say what each peer really does for each workload (one dnsmasq instance serves
# both the "dnsmasq with cache" peer and the dnsmasq -> Consul DNS chain).
LABELS: dict[str, dict[str, str]] = {
    "gateway": {"*": "gateway"},
    "dnsmasq": {
        "w1": "dnsmasq -> Consul DNS (chain)",
        "w5": "dnsmasq -> Consul DNS (chain)",
        "w2": "dnsmasq cache -> Knot",
        "w3": "dnsmasq cache -> Knot",
        "*": "dnsmasq (cache; .consul -> Consul)",
    },
    "consul": {
        "w1": "Consul DNS",
        "w5": "Consul DNS",
        "*": "Consul DNS (recursor -> Knot)",
    },
    "coredns": {"*": "CoreDNS forward+cache"},
}


def label(server: str, workload: str) -> str:
    table = LABELS.get(server, {})
    return table.get(workload, table.get("*", server))


@dataclass
class Server:
    """One server under test, however it was started."""

    key: str
    host: str
    port: int
    pid: int
    process: ServerProcess

    @property
    def alive(self) -> bool:
        return self.process.running

    def log_tail(self, chars: int = 3000) -> str:
        return self.process.log_tail(chars)


def bench_gateway(
    knot: KnotUpstream, consul: ConsulAgent, *args: str, log_path: Path
) -> ConsulGateway:
    """The gateway in front of ``consul`` with ``knot`` upstream, as every bench starts it.

    Ready = answering a name of the upstream zone: "." would be REFUSED upstream, which
    the gateway may retry until its forward deadline, and only the listener is in question.
    """
    return ConsulGateway(consul.http_addr, knot.address, *args, log_path=log_path, probe_name=ZONE)


@dataclass
class Backends:
    """Knot with the generated zone and a Consul dev agent with the generated catalog."""

    consul_bin: str
    knot: KnotUpstream
    consul: ConsulAgent


def start_backends(
    stack: contextlib.ExitStack, catalog: Catalog, consul_bin: str, instances: int
) -> Backends:
    """Start both (stopped by ``stack``) and register ``catalog``; Consul recurses to Knot."""
    log("starting Knot (upstream, example.test.)")
    knot = KnotUpstream(records=workloads.zone_records())
    stack.callback(knot.close)
    knot.start()
    log("starting Consul dev agent")
    consul = ConsulAgent("bench1", binary=consul_bin, hcl=[f'recursors = ["{knot.address}"]'])
    stack.callback(consul.close)
    consul.start()
    took = register(consul, catalog)
    wait_registered(consul, catalog)
    log(
        f"catalog: {len(catalog.services)} services x {instances} instances on "
        f"{len(catalog.nodes)} nodes registered in {took:.2f}s"
    )
    return Backends(consul_bin, knot, consul)


@dataclass
class Peers:
    """The servers that started, why the others did not, and how each was started."""

    servers: list[Server] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    gateway_command: list[str] | None = None
    gateway_metrics_addr: str | None = None
    dnsmasq_command: list[str] | None = None
    coredns_binary: Path | None = None
    corefile: str | None = None

    @property
    def gateway(self) -> Server | None:
        return next((s for s in self.servers if s.key == "gateway"), None)


def start_failure(exc: BaseException) -> str:
    """First line of a start error plus the last line of the log tail it carries."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0][:200] + (f" -- {lines[-1][:200]}" if len(lines) > 1 else "")


def start_peers(
    keys: Sequence[str],
    stack: contextlib.ExitStack,
    backends: Backends,
    workdir: Path,
    *,
    gateway_args: str = "",
    coredns_version: str,
    coredns_build_timeout: float,
) -> Peers:
    """Start the servers named in ``keys``; one that fails is reported, not fatal."""
    knot, consul = backends.knot, backends.consul
    peers = Peers()
    for key in keys:
        try:
            if key == "gateway":
                gw = bench_gateway(
                    knot, consul, *shlex.split(gateway_args), log_path=workdir / "gateway.log"
                )
                log(f"starting gateway: {' '.join(gw.command())}")
                stack.callback(gw.close)
                gw.start(timeout=30)
                assert gw.pid is not None
                peers.gateway_command = gw.command()
                peers.gateway_metrics_addr = gw.metrics_addr
                peers.servers.append(Server("gateway", gw.host, gw.port, gw.pid, gw))
            elif key == "dnsmasq":
                dm = DnsmasqServer(
                    [f"{LOOPBACK}#{knot.port}", f"/consul/{LOOPBACK}#{consul.dns_port}"],
                    cache_size=10000,
                )
                stack.callback(dm.close)
                dm.start()
                assert dm.pid is not None
                peers.dnsmasq_command = dm.command()
                peers.servers.append(Server("dnsmasq", dm.host, dm.port, dm.pid, dm))
            elif key == "consul":
                assert consul.pid is not None
                peers.servers.append(
                    Server("consul", LOOPBACK, consul.dns_port, consul.pid, consul)
                )
            elif key == "coredns":
                log("CoreDNS: using the cached build or building it (Go module proxy)")
                binary = coredns_binary(coredns_version, coredns_build_timeout)
                peers.coredns_binary = binary
                cd = CoreDNSServer(binary, knot.address, f"{LOOPBACK}:{consul.dns_port}")
                stack.callback(cd.close)
                cd.start()
                assert cd.pid is not None
                peers.corefile = cd.corefile.read_text()
                peers.servers.append(Server("coredns", cd.host, cd.port, cd.pid, cd))
        except CoreDNSUnavailable as exc:
            peers.unavailable[key] = str(exc).splitlines()[0][:300]
            log(f"{key}: not available: {exc}")
        except Exception as exc:
            peers.unavailable[key] = f"failed to start: {start_failure(exc)}"
            log(f"{key} FAILED TO START: {exc}")
    return peers


def probe(host: str, port: int, name: str, rdtype: str, timeout: float = 2.0) -> str:
    """rcode and answer count of one UDP query, for the start-up sanity line."""
    try:
        msg = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        resp = dns.query.udp(msg, host, port=port, timeout=timeout)
    except Exception as exc:  # a report line, not a failure
        return f"error {type(exc).__name__}"
    return f"{dns.rcode.to_text(resp.rcode())}/{sum(len(r) for r in resp.answer)}"


def sanity(servers: Sequence[Server], catalog: Catalog) -> dict[str, str]:
    """One line per server: does it answer a Consul name, a cached name and an NXDOMAIN?"""
    svc = catalog.services[0].name
    checks = [
        (f"{svc}.service.consul", "A"),
        (f"{svc}.service.consul", "SRV"),
        (workloads.cached_name(1), "A"),
        ("nx0001." + ZONE, "A"),
    ]
    lines: dict[str, str] = {}
    for s in servers:
        answers = ", ".join(f"{n} {t}: {probe(s.host, s.port, n, t)}" for n, t in checks)
        log(f"{s.key} on {s.host}:{s.port} pid {s.pid}: {answers}")
        lines[s.key] = answers
    return lines
