"""Issue 8, the gateway's own answers, against the real gateway process and Knot.

Hosts files (read at start, on a change without a restart, on SIGHUP), the
RFC 6761 local names, the CHAOS class (never reaching Knot: its own query
counters prove it), --log-queries, --listen with an interface name and the
default listen addresses, and RFC 8906's corners. Clients: dnspython, dig,
and glibc's getent inside a network namespace of the test's own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from harness.gateway import REPO_ROOT, GatewayProcess
from harness.knot import KnotUpstream
from harness.ports import free_port
from harness.process import wait_for
from tests.support.dnsclient import dig_short, query

HOSTS = "192.0.2.50 Printer printer.lan\n192.0.2.51 printer\n2001:db8::50 printer\n"
# A change must show within the poll interval (1 s); generous for a shared machine.
CHANGE_TIMEOUT_S = 15.0
NETNS_TIMEOUT_S = 90


def addresses(gw: GatewayProcess, name: str, rdtype: str = "A") -> set[str]:
    reply = query(gw.host, gw.port, name, rdtype)
    return {rd.to_text() for rrset in reply.answer for rd in rrset}


@pytest.fixture
def hosts_gateway(knot: KnotUpstream, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    with GatewayProcess("--upstream", knot.address, "--hosts-file", str(hosts),
                        probe_name="localhost.", probe_type="A") as gw:  # fmt: skip
        yield gw, hosts


def test_hosts_file_names_and_addresses(hosts_gateway: tuple[GatewayProcess, Path]) -> None:
    gw, _ = hosts_gateway
    assert addresses(gw, "printer") == {"192.0.2.50", "192.0.2.51"}  # no dot, two lines
    assert addresses(gw, "PRINTER.lan") == {"192.0.2.50"}
    assert addresses(gw, "printer", "AAAA") == {"2001:db8::50"}
    assert dig_short(gw.host, gw.port, "-x", "192.0.2.50") == ["printer."]
    assert dig_short(gw.host, gw.port, "-x", "2001:db8::50") == ["printer."]
    nodata = query(gw.host, gw.port, "printer", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.flags & dns.flags.AA


def test_a_changed_hosts_file_is_served_without_a_restart(
    hosts_gateway: tuple[GatewayProcess, Path], tmp_path: Path
) -> None:
    gw, hosts = hosts_gateway
    pid = gw.pid
    assert addresses(gw, "printer.lan") == {"192.0.2.50"}  # prepared for the fast path now
    hosts.write_text(HOSTS.replace("192.0.2.50 Printer printer.lan", "192.0.2.60 printer.lan"))
    wait_for(lambda: addresses(gw, "printer.lan") == {"192.0.2.60"},
             CHANGE_TIMEOUT_S, message="the rewritten hosts file")  # fmt: skip
    # Replaced by a rename, as editors and container runtimes do.
    new = tmp_path / "hosts.new"
    new.write_text("192.0.2.70 scanner\n")
    new.replace(hosts)
    wait_for(lambda: addresses(gw, "scanner") == {"192.0.2.70"},
             CHANGE_TIMEOUT_S, message="the renamed hosts file")  # fmt: skip
    # A name no longer in the file goes to the upstream (Knot: not its zone).
    assert query(gw.host, gw.port, "printer.lan", "A").rcode() != dns.rcode.NOERROR
    assert gw.pid == pid and gw.running


def test_sighup_rereads_a_change_the_poll_cannot_see(
    hosts_gateway: tuple[GatewayProcess, Path],
) -> None:
    gw, hosts = hosts_gateway
    assert addresses(gw, "printer.lan") == {"192.0.2.50"}
    before = os.stat(hosts)
    # Same inode, same size, same mtime: only SIGHUP can tell.
    with hosts.open("r+") as handle:
        handle.write(HOSTS.replace("192.0.2.50", "192.0.2.59"))
    os.utime(hosts, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(hosts).st_size == before.st_size
    assert gw.pid is not None
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: addresses(gw, "printer.lan") == {"192.0.2.59"},
             CHANGE_TIMEOUT_S, message="the hosts file after SIGHUP")  # fmt: skip


def test_a_bad_line_is_named_and_the_rest_served(knot: KnotUpstream, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.write_text("192.0.2.80 good\nnot-an-address bad\n192.0.2.81 also-good\n")
    with GatewayProcess("--upstream", knot.address, "--no-hosts", "--addn-hosts", str(extra),
                        probe_name="localhost.", probe_type="A") as gw:  # fmt: skip
        assert addresses(gw, "good") == {"192.0.2.80"}
        assert addresses(gw, "also-good") == {"192.0.2.81"}
        assert f"bad address at {extra} line 2" in gw.log_text()


def test_localhost_and_loopback_reverse_never_reach_the_upstream(
    knot: KnotUpstream, tmp_path: Path
) -> None:
    with GatewayProcess("--upstream", knot.address, "--no-hosts", "--metrics-listen",
                        f"127.0.0.1:{free_port()}", probe_name="localhost.",
                        probe_type="A") as gw:  # fmt: skip
        before = knot.query_count()
        assert addresses(gw, "localhost") == {"127.0.0.1"}
        assert addresses(gw, "localhost", "AAAA") == {"::1"}
        assert addresses(gw, "anything.localhost") == {"127.0.0.1"}
        assert dig_short(gw.host, gw.port, "-x", "127.0.0.1") == ["localhost."]
        assert dig_short(gw.host, gw.port, "-x", "::1") == ["localhost."]
        other = query(gw.host, gw.port, "2.0.0.127.in-addr.arpa", "PTR")
        assert other.rcode() == dns.rcode.NXDOMAIN and other.authority
        assert knot.query_count() == before


def chaos(gw: GatewayProcess, name: str, rdclass: str = "CH") -> dns.message.Message:
    return query(gw.host, gw.port, name, "TXT", rdclass=rdclass)


def test_chaos_is_answered_by_the_gateway_and_never_reaches_knot(knot: KnotUpstream) -> None:
    with GatewayProcess("--upstream", knot.address, probe_name="consul.") as gw:
        before = knot.query_count()
        version = chaos(gw, "version.bind")
        assert version.rcode() == dns.rcode.NOERROR
        text = b"".join(version.answer[0][0].strings).decode()
        assert text.startswith("consul-dns-gateway"), text
        hostname = chaos(gw, "hostname.bind")
        assert b"".join(hostname.answer[0][0].strings).decode() == socket.gethostname()
        assert chaos(gw, "id.server").answer and chaos(gw, "version.server").answer
        assert chaos(gw, "authors.bind").rcode() == dns.rcode.REFUSED
        assert chaos(gw, "www.example.test", "HS").rcode() == dns.rcode.REFUSED
        assert knot.query_count() == before


def test_chaos_refuse(knot: KnotUpstream) -> None:
    with GatewayProcess("--upstream", knot.address, "--chaos", "refuse",
                        probe_name="consul.") as gw:  # fmt: skip
        before = knot.query_count()
        for name in ("version.bind", "hostname.bind", "id.server"):
            assert chaos(gw, name).rcode() == dns.rcode.REFUSED
        assert knot.query_count() == before


def test_log_queries(knot: KnotUpstream) -> None:
    token = "b1gs3cret-t0ken"
    env = {"CONSUL_HTTP_TOKEN": token}
    with GatewayProcess("--upstream", knot.address, probe_name="consul.", env=env) as quiet:
        query(quiet.host, quiet.port, "web.service.consul", "A")
        assert "query client=" not in quiet.log_text()  # off by default
    with GatewayProcess("--upstream", knot.address, "--log-queries", "--log-level", "warning",
                        probe_name="consul.", env=env) as gw:  # fmt: skip
        query(gw.host, gw.port, "web.service.consul", "A")
        query(gw.host, gw.port, "web.service.consul", "A", tcp=True)  # prepared: fast path
        query(gw.host, gw.port, "www.example.test", "AAAA")
        query(gw.host, gw.port, "www.example.test", "AAAA")  # from the cache
        query(gw.host, gw.port, "localhost", "A")

        def lines() -> list[str] | None:
            found = [line for line in gw.log_text().splitlines() if " query client=" in line]
            return found if len(found) >= 5 else None

        logged = wait_for(lines, message="five query lines")
        text = "\n".join(logged)
        for expected in (
            "proto=udp name=web.service.consul. type=A class=IN rcode=NOERROR answerer=catalog",
            "proto=tcp name=web.service.consul. type=A class=IN rcode=NOERROR answerer=catalog",
            "name=www.example.test. type=AAAA class=IN rcode=NOERROR answerer=forward",
            "name=www.example.test. type=AAAA class=IN rcode=NOERROR answerer=cache",
            "name=localhost. type=A class=IN rcode=NOERROR answerer=hosts",
        ):
            assert expected in text, text
        assert all("client=127.0.0.1 " in line and "latency_ms=" in line for line in logged)
        assert token not in gw.log_text()


def test_listen_on_an_interface_name(knot: KnotUpstream) -> None:
    port = free_port()
    with GatewayProcess("--upstream", knot.address, "--listen", f"lo:{port}",
                        probe_name="localhost.", probe_type="A") as gw:  # fmt: skip
        for host in ("127.0.0.1", "::1"):
            reply = query(host, port, "localhost", "A")
            assert {rd.to_text() for rrset in reply.answer for rd in rrset} == {"127.0.0.1"}
        assert f"listening on [::1]:{port}" in gw.log_text()


def run_in_netns(script: str, tmp_path: Path) -> str:
    """``script`` (sh) in new network and mount namespaces, with loopback up."""
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", "set -e\nip link set lo up\n" + script],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=NETNS_TIMEOUT_S,
    )  # fmt: skip
    log = tmp_path / "gw.log"
    assert proc.returncode == 0, (
        proc.stdout + proc.stderr + (log.read_text() if log.exists() else "")
    )
    return proc.stdout


def test_default_listen_is_both_loopback_addresses_and_getent_resolves_hosts(
    tmp_path: Path,
) -> None:
    """No --listen: 127.0.0.1:53 and [::1]:53, as dnsmasq; glibc asks the gateway."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    extra = tmp_path / "extra"
    extra.write_text("192.0.2.90 nas-box\n")
    script = textwrap.dedent(
        f"""
        mount --bind {resolv} /etc/resolv.conf
        {sys.executable} -m gateway --upstream 127.0.0.1:9 --addn-hosts {extra} \\
            > {tmp_path}/gw.log 2>&1 &
        pid=$!
        for i in $(seq 100); do
          dig @::1 +time=1 +tries=1 +short localhost | grep -q 127.0.0.1 && break
          sleep 0.1
        done
        echo "== v4"; dig @127.0.0.1 +time=2 +tries=1 +short localhost AAAA
        echo "== v6"; dig @::1 +time=2 +tries=1 +short nas-box
        echo "== getent"; getent ahosts nas-box
        echo "== reverse"; getent hosts 192.0.2.90
        kill $pid
        """
    )
    out = run_in_netns(script, tmp_path)
    assert out.split("== v4")[1].split("== v6")[0].split() == ["::1"]
    assert out.split("== v6")[1].split("== getent")[0].split() == ["192.0.2.90"]
    assert "192.0.2.90" in out.split("== getent")[1].split("== reverse")[0]
    assert "nas-box" in out.split("== reverse")[1]


def test_listen_on_a_named_interface_in_a_namespace(tmp_path: Path) -> None:
    """``--listen d0:5300``: every address of the interface, none of the others."""
    script = textwrap.dedent(
        f"""
        ip link add d0 type veth peer name d1
        ip addr add 10.77.0.1/24 dev d0
        ip addr add 2001:db8:77::1/64 dev d0 nodad
        ip link set d0 up
        ip link set d1 up
        {sys.executable} -m gateway --upstream 127.0.0.1:9 --listen d0:5300 \
            > {tmp_path}/gw.log 2>&1 &
        pid=$!
        for i in $(seq 100); do
          dig @10.77.0.1 -p 5300 +time=1 +tries=1 +short localhost | grep -q 127 && break
          sleep 0.1
        done
        echo "== v4"; dig @10.77.0.1 -p 5300 +time=2 +tries=1 +short localhost
        echo "== v6"; dig @2001:db8:77::1 -p 5300 +time=2 +tries=1 +short localhost AAAA
        echo "== lo"; dig @127.0.0.1 -p 5300 +time=1 +tries=1 +short localhost || echo "no answer"
        kill $pid
        """
    )
    out = run_in_netns(script, tmp_path)
    assert out.split("== v4")[1].split("== v6")[0].split() == ["127.0.0.1"]
    assert out.split("== v6")[1].split("== lo")[0].split() == ["::1"]
    assert "no answer" in out.split("== lo")[1]


def raw(gw: GatewayProcess, packet: bytes) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(packet, (gw.host, gw.port))
        return dns.message.from_wire(sock.recv(65535))


def test_protocol_corners(knot: KnotUpstream, tmp_path: Path) -> None:
    with GatewayProcess("--upstream", knot.address, probe_name="consul.") as gw:
        # An unassigned opcode with no question: NOTIMP, no RA/RD/CD.
        reply = raw(gw, bytes((0xAB, 0xCD, 0x79, 0x10)) + b"\x00" * 8)
        assert reply.rcode() == dns.rcode.NOTIMP
        assert not reply.flags & (dns.flags.RA | dns.flags.RD | dns.flags.CD)
        # An error the gateway builds echoes DO.
        axfr = dns.message.make_query("home.arpa.", "AXFR", use_edns=0, want_dnssec=True)
        refused = raw(gw, axfr.to_wire())
        assert refused.rcode() == dns.rcode.REFUSED and refused.ednsflags & dns.flags.DO
        # The apex NS target answers with an address.
        ns = query(gw.host, gw.port, "consul.", "NS").answer[0][0].target.to_text()
        assert addresses(gw, ns) == {"127.0.0.1"}
        # A non-PTR question at a reverse name the catalog knows: the upstream's
        # answer (Knot refuses a zone it does not serve), never an empty NOERROR.
        other = query(gw.host, gw.port, "11.2.0.192.in-addr.arpa", "TXT")
        assert other.rcode() != dns.rcode.NOERROR or other.authority
        assert query(gw.host, gw.port, "11.2.0.192.in-addr.arpa", "PTR").answer


def test_the_demo_zone_only_in_the_embedded_default(knot: KnotUpstream, tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'upstream = ["{knot.address}"]\n')
    with GatewayProcess("--config", str(config), probe_name="consul.") as gw:
        reply = query(gw.host, gw.port, "nas.home.arpa", "A")
        assert not reply.answer  # forwarded to Knot, which does not serve home.arpa
    with GatewayProcess("--upstream", knot.address, "--consul", "http://127.0.0.1:9",
                        probe_name="localhost.", probe_type="A") as gw:  # fmt: skip
        assert not query(gw.host, gw.port, "nas.home.arpa", "A").answer
    with GatewayProcess("--upstream", knot.address, probe_name="consul.") as gw:
        assert query(gw.host, gw.port, "nas.home.arpa", "A").answer  # the embedded default
