"""Weighted answers, truncation, upstream failure, config errors, glibc.

Each test starts its own gateway subprocess with the settings it needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from scipy.stats import chisquare

from harness import zone
from harness.gateway import REPO_ROOT, GatewayProcess
from harness.knot import KnotUpstream
from harness.ports import free_port
from tests.support.dnsclient import query

# Goodness-of-fit threshold: a correct server fails this about once in 10^4 runs.
P_VALUE_FLOOR = 1e-4


def write_catalog(folder: Path, instances: list[dict[str, object]], node: str = "n1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.json").write_text(
        json.dumps({"node_name": node, "advertise_addr": "192.0.2.1", "services": instances})
    )
    return folder


def run_failing_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    """The gateway run with settings it must refuse before serving anything."""
    command = [sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0",
               "--upstream", "127.0.0.1:9", *args]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def test_first_address_follows_weights(tmp_path: Path) -> None:
    """Thousands of real queries: the first A record is chosen by weight."""
    weights = {"192.0.2.101": 1, "192.0.2.102": 2, "192.0.2.103": 3, "192.0.2.104": 10}
    catalog = write_catalog(
        tmp_path / "cat",
        [
            {"name": "lb", "id": f"lb{i}", "address": ip, "port": 80, "weights": {"passing": w}}
            for i, (ip, w) in enumerate(weights.items())
        ],
    )
    samples = 4000
    with GatewayProcess("--catalog", str(catalog), "--upstream", "127.0.0.1:9",
                        probe_name="consul.") as gw:  # fmt: skip
        firsts = Counter(
            query(gw.host, gw.port, "lb.service.consul", "A").answer[0][0].address
            for _ in range(samples)
        )
        srv_firsts = Counter(
            query(gw.host, gw.port, "lb.service.consul", "SRV").answer[0][0].weight
            for _ in range(samples // 4)
        )
    total = sum(weights.values())
    observed = [firsts[ip] for ip in weights]
    expected = [samples * w / total for w in weights.values()]
    result = chisquare(observed, expected)
    print(f"first-address counts {dict(firsts)}, expected {expected}, p={result.pvalue:.3g}")
    assert result.pvalue > P_VALUE_FLOOR
    # SRV order is weighted too (the weight field carries Weights.Passing).
    srv_observed = [srv_firsts[w] for w in weights.values()]
    srv_expected = [samples // 4 * w / total for w in weights.values()]
    assert chisquare(srv_observed, srv_expected).pvalue > P_VALUE_FLOOR


def test_record_limit_keeps_a_weighted_sample(tmp_path: Path) -> None:
    weights = {f"192.0.2.{110 + i}": (20 if i == 0 else 1) for i in range(6)}
    catalog = write_catalog(
        tmp_path / "cat",
        [
            {"name": "lim", "id": f"l{i}", "address": ip, "port": 80, "weights": {"passing": w}}
            for i, (ip, w) in enumerate(weights.items())
        ],
    )
    with GatewayProcess("--catalog", str(catalog), "--a-record-limit", "2",
                        "--upstream", "127.0.0.1:9", probe_name="consul.") as gw:  # fmt: skip
        answers = [query(gw.host, gw.port, "lim.service.consul", "A") for _ in range(400)]
    assert all(len(a.answer[0]) == 2 for a in answers)
    heavy = sum("192.0.2.110" in {rr.address for rr in a.answer[0]} for a in answers)
    # Weight 20 of 25: in a weighted sample of 2 it is nearly always present.
    assert heavy > 0.9 * len(answers)


def test_big_service_truncates_over_udp_and_is_complete_over_tcp(tmp_path: Path) -> None:
    count = 300
    catalog = write_catalog(
        tmp_path / "cat",
        [
            {"name": "big", "id": f"b{i}", "address": f"10.0.{i // 250}.{i % 250 + 1}", "port": i}
            for i in range(count)
        ],
    )
    with GatewayProcess("--catalog", str(catalog), "--upstream", "127.0.0.1:9",
                        probe_name="consul.") as gw:  # fmt: skip
        plain = query(gw.host, gw.port, "big.service.consul", "A", edns=False)
        assert plain.flags & dns.flags.TC
        assert 0 < len(plain.answer[0]) < count
        assert len(plain.to_wire()) <= 512
        edns = query(gw.host, gw.port, "big.service.consul", "A", payload=1232)
        assert edns.flags & dns.flags.TC and len(edns.to_wire()) <= 1232
        full = query(gw.host, gw.port, "big.service.consul", "A", tcp=True)
        assert not full.flags & dns.flags.TC
        assert len(full.answer[0]) == count
        srv = query(gw.host, gw.port, "big.service.consul", "SRV", tcp=True)
        assert len(srv.answer[0]) == count
        assert len(srv.additional) == count  # every target with its glue


def test_serve_stale_then_servfail(tmp_path: Path) -> None:
    """Upstream killed: expired answers are served stale, then SERVFAIL."""
    with KnotUpstream() as knot:
        args = ("--upstream", knot.address, "--serve-stale", "4", "--stale-answer-ttl", "30",
                "--forward-timeout", "0.3", "--forward-deadline", "0.6")  # fmt: skip
        with GatewayProcess(*args, probe_name="consul.") as gw:
            fresh = query(gw.host, gw.port, zone.SHORT, "A")
            assert fresh.answer[0].ttl <= zone.SHORT_TTL
            knot.kill()
            time.sleep(zone.SHORT_TTL + 0.2)  # the entry expires
            started = time.monotonic()
            stale = query(gw.host, gw.port, zone.SHORT, "A")
            assert stale.rcode() == dns.rcode.NOERROR
            assert {rr.address for rr in stale.answer[0]} == {zone.SHORT_A}
            assert stale.answer[0].ttl == 30  # RFC 8767 4
            assert time.monotonic() - started < 3.0  # after the deadline, not a client timeout
            time.sleep(4.5)  # past the serve-stale window
            gone = query(gw.host, gw.port, zone.SHORT, "A")
            assert gone.rcode() == dns.rcode.SERVFAIL
            # Never-cached names fail within the deadline too.
            started = time.monotonic()
            assert query(gw.host, gw.port, zone.WWW, "A").rcode() == dns.rcode.SERVFAIL
            assert time.monotonic() - started < 3.0
            # Local answers do not depend on the upstream.
            assert query(gw.host, gw.port, "web.service.consul", "A").rcode() == dns.rcode.NOERROR


def test_failover_to_the_second_upstream() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with KnotUpstream() as knot, GatewayProcess(
        "--upstream", dead, "--upstream", knot.address, "--forward-timeout", "0.3",
        probe_name="consul.",
    ) as gw:  # fmt: skip
        reply = query(gw.host, gw.port, zone.WWW, "A")
        assert {rr.address for rr in reply.answer[0]} == {zone.WWW_A}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("cache_size = -1\n", "option 'cache_size'"),
        ("no_such_option = 1\n", "unknown option 'no_such_option'"),
        ("listen = ['127.0.0.1:99999']\n", "option 'listen'"),
        ("upstream = ['not-an-ip']\n", "option 'upstream'"),
        ("forward_timeout = 'soon'\n", "option 'forward_timeout'"),
        ("only_passing = 3\n", "option 'only_passing'"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_names_option_and_file(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    proc = run_failing_gateway("--config", str(path))
    assert proc.returncode == 2
    assert message in proc.stderr and str(path) in proc.stderr, proc.stderr


def test_bad_catalog_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "cat"
    bad.mkdir()
    (bad / "svc.json").write_text(json.dumps({"service": {"name": "x", "port": "eighty"}}))
    proc = run_failing_gateway("--catalog", str(bad))
    assert proc.returncode == 2
    assert "svc.json" in proc.stderr and "'port'" in proc.stderr, proc.stderr


def test_resolv_conf_default_skips_our_own_address(tmp_path: Path) -> None:
    """As the system's only nameserver, the gateway must not forward to itself."""
    from gateway.options import Endpoint, system_upstreams

    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver 127.0.0.2\nnameserver ::1\n")
    listen = (Endpoint("127.0.0.1", 53), Endpoint("::1", 53))
    assert system_upstreams(listen, conf) == (Endpoint("127.0.0.2", 53),)


def test_glibc_getent_through_the_gateway(tmp_path: Path) -> None:
    """getaddrinfo() via glibc, the gateway as the only nameserver in resolv.conf.

    Runs in fresh network and mount namespaces, so the gateway can own
    127.0.0.1:53 and a private resolv.conf without touching the machine's.
    """
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    script = textwrap.dedent(
        f"""
        set -e
        ip link set lo up
        mount --bind {resolv} /etc/resolv.conf
        {sys.executable} -m gateway --listen 127.0.0.1:53 > {tmp_path}/gw.log 2>&1 &
        pid=$!
        for i in $(seq 50); do
          getent hosts ns.home.arpa >/dev/null 2>&1 && break
          sleep 0.1
        done
        echo "== ahosts"; getent ahosts web.service.consul
        echo "== v6"; getent ahosts api.service.consul
        echo "== missing"; getent hosts nope.service.consul || echo "exit=$?"
        kill $pid
        """
    )
    # unshare (util-linux) and ip (iproute2) are part of the machine's base.
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", script],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + (tmp_path / "gw.log").read_text()
    ahosts = out.split("== ahosts")[1].split("== v6")[0]
    assert {"192.0.2.11", "192.0.2.12", "192.0.2.13"} <= set(ahosts.split())
    assert "2001:db8::11" in out.split("== v6")[1]
    assert "exit=2" in out.split("== missing")[1]  # NXDOMAIN: "key not found"


def test_workers_share_the_port_and_metrics_are_served() -> None:
    import urllib.request

    metrics_port = free_port()
    with GatewayProcess("--workers", "2", "--upstream", "127.0.0.1:9",
                        "--metrics-listen", f"127.0.0.1:{metrics_port}",
                        probe_name="consul.") as gw:  # fmt: skip
        children = subprocess.run(
            ["pgrep", "-P", str(gw.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        for _ in range(50):
            assert query(gw.host, gw.port, "db.service.consul", "A").answer
        assert query(gw.host, gw.port, "db.service.consul", "A", tcp=True).answer
        # Worker 0 serves the metrics (per worker counters, documented).
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
        assert b"dns_gateway_" in text


def test_idle_tcp_connections_are_closed() -> None:
    import socket

    args = ("--tcp-idle-timeout", "0.5", "--upstream", "127.0.0.1:9")
    with GatewayProcess(*args, probe_name="consul.") as gw:
        sock = socket.create_connection((gw.host, gw.port), timeout=5)
        started = time.monotonic()
        try:
            assert sock.recv(1) == b""  # the server closed the idle connection
        finally:
            sock.close()
        assert time.monotonic() - started < 4.0


def test_zone_that_shadows_the_consul_domain_is_refused(tmp_path: Path) -> None:
    (tmp_path / "consul.zone").write_text(
        "$ORIGIN consul.\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
    )
    proc = run_failing_gateway("--zones", str(tmp_path))
    assert proc.returncode == 2
    assert "option 'zones'" in proc.stderr and "'consul'" in proc.stderr, proc.stderr


def test_ipv6_and_ipv4_listeners_side_by_side() -> None:
    v6_port = free_port("::1")
    with GatewayProcess("--listen", f"[::1]:{v6_port}", "--upstream", "127.0.0.1:9",
                        probe_name="consul.") as gw:  # fmt: skip
        for host, port in (("::1", v6_port), (gw.host, gw.port)):
            for tcp in (False, True):
                reply = query(host, port, "db.service.consul", "A", tcp=tcp)
                assert {rr.address for rr in reply.answer[0]} == {"192.0.2.21"}


def test_sighup_reloads_zones_and_catalog_and_keeps_them_on_errors(tmp_path: Path) -> None:
    import signal

    zone_dir = tmp_path / "zones"
    zone_dir.mkdir()
    zone_file = zone_dir / "lab.test.zone"
    head = "$ORIGIN lab.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
    zone_file.write_text(head)
    catalog = write_catalog(tmp_path / "cat", [{"name": "old", "port": 1}])
    args = ("--zones", str(zone_dir), "--catalog", str(catalog), "--upstream", "127.0.0.1:9")
    with GatewayProcess(*args, probe_name="consul.") as gw:
        assert query(gw.host, gw.port, "new.lab.test", "A").rcode() == dns.rcode.NXDOMAIN
        assert query(gw.host, gw.port, "old.service.consul", "A").answer

        def reload_and_wait(marker: str, count: int) -> None:
            assert gw.pid is not None
            os.kill(gw.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while gw.log_text().count(marker) < count:
                assert time.monotonic() < deadline, gw.log_tail()
                time.sleep(0.05)

        zone_file.write_text(head + "new A 192.0.2.77\n")
        write_catalog(tmp_path / "cat", [{"name": "fresh", "port": 1}])
        reload_and_wait("reloaded", 1)
        assert {rr.address for rr in query(gw.host, gw.port, "new.lab.test", "A").answer[0]} == {
            "192.0.2.77"
        }
        assert query(gw.host, gw.port, "fresh.service.consul", "A").answer
        assert query(gw.host, gw.port, "old.service.consul", "A").rcode() == dns.rcode.NXDOMAIN

        zone_file.write_text(head + "broken A not-an-address\n")
        reload_and_wait("reload failed", 1)
        assert "lab.test.zone" in gw.log_text()
        answer = query(gw.host, gw.port, "new.lab.test", "A").answer[0]
        assert {rr.address for rr in answer} == {"192.0.2.77"}  # still the old data
