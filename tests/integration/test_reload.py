"""SIGHUP re-reads the whole configuration (issue 10), against the gateway as a subprocess.

The TOML file, the zones and the upstreams change between reloads while a client
keeps asking; every query is answered, a long-lived TCP connection sees the new
data, and a bad file leaves the old configuration serving with the file and line in
the log.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import threading
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode

from harness.gateway import GatewayProcess, scrape_families
from harness.ports import free_port
from harness.process import wait_for
from tests.support.dnsclient import query
from tests.support.scripted import ScriptedUpstream, UpstreamThread, reply_to

RELOADS = 6
# The query loop's bound: it stops after the reloads, or at this many queries.
MAX_QUERIES = 50_000
# A query gets this long to be answered before it counts as lost.
QUERY_TIMEOUT_S = 5.0
ZONE_HEAD = "$ORIGIN lab.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
UPSTREAM_A = "198.51.100.1"
UPSTREAM_B = "198.51.100.2"


def zone_text(version: int) -> str:
    return ZONE_HEAD + f"www A 192.0.2.{100 + version}\n"


def answering(address: str) -> ScriptedUpstream:
    return ScriptedUpstream(lambda data, addr, sock: sock.sendto(reply_to(data, address), addr))


def toml(zones: Path, upstream: str, *extra: str) -> str:
    lines = [f'upstream = ["{upstream}"]', f'zones = "{zones}"', *extra]
    return "\n".join(lines) + "\n"


class QueryLoop(threading.Thread):
    """Asks ``www.lab.test`` over UDP, one query at a time, until told to stop."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.stop = threading.Event()
        self.asked = 0
        self.lost = 0
        self.bad: list[str] = []
        self.addresses: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set() and self.asked < MAX_QUERIES:
            self.asked += 1
            try:
                reply = query(self.host, self.port, "www.lab.test", "A", timeout=QUERY_TIMEOUT_S)
            except dns.exception.Timeout:
                self.lost += 1
                continue
            if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
                self.bad.append(dns.rcode.to_text(reply.rcode()))
                continue
            self.addresses |= {rr.address for rr in reply.answer[0]}


def tcp_ask(sock: socket.socket, name: str) -> dns.message.Message:
    wire = dns.message.make_query(name, "A").to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    head = sock.recv(2, socket.MSG_WAITALL)
    return dns.message.from_wire(sock.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL))


def test_sighup_swaps_the_whole_configuration_without_losing_a_query(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_file = zones / "lab.test.zone"
    zone_file.write_text(zone_text(0))
    conf = tmp_path / "gw.toml"
    up_a, up_b = answering(UPSTREAM_A), answering(UPSTREAM_B)
    conf.write_text(toml(zones, up_a.address))
    metrics_port = free_port()
    args = ("--config", str(conf), "--metrics-listen", f"127.0.0.1:{metrics_port}")
    with UpstreamThread(up_a, up_b), GatewayProcess(*args) as gw:
        assert gw.pid is not None
        pid = gw.pid
        names = (f"n{i}.example" for i in itertools.count())  # never cached
        reply = query(gw.host, gw.port, next(names), "A")
        assert {rr.address for rr in reply.answer[0]} == {UPSTREAM_A}
        tcp = socket.create_connection((gw.host, gw.port), timeout=QUERY_TIMEOUT_S)
        assert {rr.address for rr in tcp_ask(tcp, "www.lab.test").answer[0]} == {"192.0.2.100"}

        def reload(expect: str, count: int) -> None:
            os.kill(pid, signal.SIGHUP)
            wait_for(lambda: gw.log_text().count(expect) >= count, message=expect)

        loop = QueryLoop(gw.host, gw.port)
        loop.start()
        try:
            for version in range(1, RELOADS + 1):
                upstream = (up_a, up_b)[version % 2]
                zone_file.write_text(zone_text(version))
                conf.write_text(toml(zones, upstream.address))
                reload("reloaded:", version)
                # The loop has had the new zone's answer before the next reload.
                served = f"192.0.2.{100 + version}"
                wait_for(
                    lambda s=served: s in loop.addresses or not loop.is_alive(),  # type: ignore[misc]
                    message=served,
                )
        finally:
            loop.stop.set()
            loop.join(60)
        print(f"{loop.asked} queries during {RELOADS} reloads, {loop.lost} lost")
        assert loop.asked > 0 and loop.lost == 0 and loop.bad == []
        # Every reloaded version was answered, and nothing else.
        reloaded = {f"192.0.2.{100 + v}" for v in range(1, RELOADS + 1)}
        assert reloaded <= loop.addresses <= reloaded | {"192.0.2.100"}
        # The long-lived TCP connection answers from the new zone too.
        latest = f"192.0.2.{100 + RELOADS}"
        assert {rr.address for rr in tcp_ask(tcp, "www.lab.test").answer[0]} == {latest}
        # RELOADS is even: back on upstream A; a new name goes there.
        reply = query(gw.host, gw.port, next(names), "A")
        assert {rr.address for rr in reply.answer[0]} == {UPSTREAM_A}

        # Upstream B and a restart-only option: the rest applies, the log says which waits.
        conf.write_text(toml(zones, up_b.address, "workers = 2"))
        reload("reloaded:", RELOADS + 1)
        assert "'workers' needs a restart" in gw.log_text()
        reply = query(gw.host, gw.port, next(names), "A")
        assert {rr.address for rr in reply.answer[0]} == {UPSTREAM_B}

        # Bad files: logged with file and line, the previous configuration keeps serving.
        conf.write_text(toml(zones, up_a.address, "this is not toml"))
        reload("reload failed", 1)
        conf.write_text(toml(zones, up_a.address, "cache_size = -1"))
        reload("reload failed", 2)
        failures = [line for line in gw.log_text().splitlines() if "reload failed" in line]
        assert f"{conf}: not valid TOML" in failures[0] and "line 3" in failures[0]
        assert f"{conf}:3: option 'cache_size'" in failures[1]
        reply = query(gw.host, gw.port, next(names), "A")
        assert {rr.address for rr in reply.answer[0]} == {UPSTREAM_B}
        assert {rr.address for rr in tcp_ask(tcp, "www.lab.test").answer[0]} == {latest}
        tcp.close()
        # After 7 reloads the exposition still parses: each family once, both upstreams in it.
        families = scrape_families(f"127.0.0.1:{metrics_port}")
        family_names = [family.name for family in families]
        assert len(family_names) == len(set(family_names))
        [queries] = [f for f in families if f.name == "dns_gateway_upstream_queries"]
        assert {s.labels["upstream"] for s in queries.samples} == {up_a.address, up_b.address}


def hosts_addresses(gw: GatewayProcess, name: str) -> tuple[set[str], int | None]:
    reply = query(gw.host, gw.port, name, "A")
    found = {rd.to_text() for rrset in reply.answer for rd in rrset}
    return found, reply.answer[0].ttl if reply.answer else None


def test_a_reload_changes_the_hosts_files_the_query_log_and_sighup_rereads_hosts_anyway(
    tmp_path: Path,
) -> None:
    """The hosts options of issue 8 are reloadable: other files, another TTL, the
    query log; the new files are watched; a SIGHUP whose reload fails (a bad zone)
    still rereads the hosts files."""
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_file = zones / "lab.test.zone"
    zone_file.write_text(zone_text(0))
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("192.0.2.20 alpha\n")
    second.write_text("192.0.2.30 beta\n")
    conf = tmp_path / "gw.toml"
    up = answering(UPSTREAM_A)
    conf.write_text(toml(zones, up.address, "hosts = false", f'addn_hosts = ["{first}"]'))
    with UpstreamThread(up), GatewayProcess("--config", str(conf)) as gw:
        assert gw.pid is not None
        pid = gw.pid
        assert hosts_addresses(gw, "alpha")[0] == {"192.0.2.20"}
        assert hosts_addresses(gw, "beta")[0] == {UPSTREAM_A}  # not a hosts name yet
        assert " query client=" not in gw.log_text()

        def reload(expect: str, count: int) -> None:
            os.kill(pid, signal.SIGHUP)
            wait_for(lambda: gw.log_text().count(expect) >= count, message=expect)

        conf.write_text(
            toml(zones, up.address, "hosts = false", f'addn_hosts = ["{second}"]',
                 "local_ttl = 77", "log_queries = true")
        )  # fmt: skip
        reload("reloaded:", 1)
        assert hosts_addresses(gw, "beta") == ({"192.0.2.30"}, 77)
        assert hosts_addresses(gw, "alpha")[0] == {UPSTREAM_A}  # the old file is not read
        wait_for(lambda: " query client=" in gw.log_text(), message="a query log line")
        # The new file is watched: a rewrite shows without a signal.
        second.write_text("192.0.2.31 beta\n")
        wait_for(lambda: hosts_addresses(gw, "beta")[0] == {"192.0.2.31"},
                 message="the rewritten new hosts file")  # fmt: skip
        # A bad zone fails the reload, but the SIGHUP rereads the hosts files anyway:
        # a change the poll cannot see (same inode, size and mtime).
        zone_file.write_text("$ORIGIN lab.test.\nwww A not-an-address\n")
        before = os.stat(second)
        with second.open("r+") as handle:
            handle.write("192.0.2.32 beta\n")
        os.utime(second, ns=(before.st_atime_ns, before.st_mtime_ns))
        reload("reload failed", 1)
        wait_for(lambda: hosts_addresses(gw, "beta")[0] == {"192.0.2.32"},
                 message="the hosts file after a failed reload")  # fmt: skip
        assert hosts_addresses(gw, "beta")[1] == 77  # still the served configuration's TTL
        assert gw.pid == pid and gw.running
