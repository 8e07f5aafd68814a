"""``--dnsmasq-conf`` against the real programs: start-up errors and warnings, every
option dnsmasq knows has a rule, and ``server=/consul/…`` with and without a Consul
HTTP address (issue 8)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from gateway import dnsmasq_conf
from harness import zone
from harness.consul import ConsulAgent
from harness.dnsmasq import DnsmasqServer
from harness.gateway import REPO_ROOT, GatewayProcess
from harness.knot import KnotUpstream
from harness.ports import LOOPBACK, free_port
from harness.process import find_binary, wait_for
from tests.integration.test_dnsmasq_differential import answer_of
from tests.support.dnsclient import query

# A gateway refusing its configuration exits well within this.
REFUSE_TIMEOUT_S = 20.0
# The Consul service only Consul knows: an answer for it comes from Consul.
SERVICE = "dnsmasqconf"
SERVICE_ADDRESS = "127.0.0.44"


def test_every_option_dnsmasq_knows_has_a_rule() -> None:
    """``dnsmasq --help`` lists its options; each is mapped, warned about or refused."""
    text = subprocess.run(
        [find_binary("dnsmasq"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    names = set(re.findall(r"--([a-zA-Z0-9-]+)", text))
    assert len(names) > 150  # the whole list, not an error message
    assert sorted(n for n in names if dnsmasq_conf.describe(n) == "unknown") == []


def refused(conf: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0",
               "--upstream", "127.0.0.1:9", "--dnsmasq-conf", str(conf)]  # fmt: skip
    try:
        return subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=REFUSE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway started with {conf.read_text()!r}")


BAD = [
    ("top", "no-such-thing\n", "{top}:1: no-such-thing: unknown option"),
    ("top", "# ok\ncname=a.test,b.test\n", "{top}:2: cname=a.test,b.test: not supported: records"),
    ("top", "conf-dir={dir}/none,*.conf\n",
     "{top}:1: conf-dir={dir}/none,*.conf: cannot access directory {dir}/none: No such file"),
    ("top", "conf-file={dir}/none.conf\n",
     "{top}:1: conf-file={dir}/none.conf: cannot read {dir}/none.conf: No such file"),
    ("top", "conf-file={dir}/inc.conf\n", "{dir}/inc.conf:2: cache-size=-1: -1 is out of range"),
    ("top", "port=0\n", "{top}:1: port=0: port 0 turns DNS off"),
    ("missing", "", "--dnsmasq-conf {dir}/missing.conf: cannot read {dir}/missing.conf: No such"),
]  # fmt: skip


@pytest.mark.parametrize(("which", "content", "message"), BAD)
def test_bad_configuration_stops_start_up_naming_file_line_and_option(
    tmp_path: Path, which: str, content: str, message: str
) -> None:
    top = tmp_path / "dnsmasq.conf"
    top.write_text(content.format(dir=tmp_path))
    (tmp_path / "inc.conf").write_text("# included\ncache-size=-1\n")
    conf = top if which == "top" else tmp_path / "missing.conf"
    proc = refused(conf)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = "consul-dns-gateway: " + message.format(top=top, dir=tmp_path)
    assert proc.stderr.startswith(expected), proc.stderr


def test_options_of_no_effect_are_logged_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    port = free_port()
    conf.write_text(
        f"port={port}\nlisten-address={LOOPBACK}\n"
        "dhcp-range=192.0.2.10,192.0.2.50,12h\nenable-tftp\nbind-interfaces\n"
    )
    with (
        KnotUpstream() as knot,
        GatewayProcess(
            "--dnsmasq-conf", str(conf), "--upstream", knot.address,
            port=port, listen_flag=False, probe_name=zone.WWW,
        ) as gateway,
    ):  # fmt: skip
        reply = query(gateway.host, gateway.port, zone.WWW, "A")
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer
        log = gateway.log_path.read_text()
    for line, text in [(3, "dhcp-range=192.0.2.10,192.0.2.50,12h"), (4, "enable-tftp"),
                       (5, "bind-interfaces")]:  # fmt: skip
        assert f"WARNING gateway.dnsmasq_conf: {conf}:{line}: {text}: no effect here" in log


# -- server=/consul/...: the live catalog with a Consul HTTP address, else forwarded ----


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulAgent]:
    with ConsulAgent() as agent:
        agent.register_service(SERVICE, address=SERVICE_ADDRESS, port=80)
        wait_for(
            lambda: agent.health_service(SERVICE, passing=True),
            timeout=15,
            message="service registered",
        )
        yield agent


def consul_conf(folder: Path, consul: ConsulAgent, knot: KnotUpstream) -> Path:
    conf = folder / "common.conf"
    conf.write_text(
        f"no-resolv\nserver={knot.address.replace(':', '#')}\n"
        f"server=/consul/{LOOPBACK}#{consul.dns_port}\n"
    )
    return conf


def gateway_top(folder: Path, common: Path, name: str) -> tuple[Path, int]:
    port = free_port()
    top = folder / name
    top.write_text(f"port={port}\nlisten-address={LOOPBACK}\nconf-file={common}\n")
    return top, port


@pytest.mark.parametrize("with_http", [True, False], ids=["catalog", "forwarded"])
def test_consul_servers_answer_like_dnsmasq(
    consul: ConsulAgent, tmp_path: Path, with_http: bool
) -> None:
    with KnotUpstream() as knot:
        common = consul_conf(tmp_path, consul, knot)
        top, port = gateway_top(tmp_path, common, "gateway.conf")
        # Only the environment says where Consul's HTTP API is, as on a Consul host.
        env = {"CONSUL_HTTP_ADDR": consul.http_addr if with_http else ""}
        with (
            DnsmasqServer([], conf_file=common) as dnsmasq,
            GatewayProcess(
                "--dnsmasq-conf", str(top), port=port, listen_flag=False, env=env,
                probe_name=zone.WWW,
            ) as gateway,
        ):  # fmt: skip
            name = f"{SERVICE}.service.consul."
            theirs = answer_of(query(dnsmasq.host, dnsmasq.port, name, "A"))
            assert theirs == ("NOERROR", [(name, "A", SERVICE_ADDRESS)])
            wait_for(
                lambda: answer_of(query(gateway.host, gateway.port, name, "A")) == theirs,
                timeout=15,
                message=f"the gateway's answer for {name}",
            )
            for other in (zone.WWW, "nosuch.service.consul."):
                assert answer_of(query(gateway.host, gateway.port, other, "A")) == answer_of(
                    query(dnsmasq.host, dnsmasq.port, other, "A")
                )
            log = gateway.log_path.read_text()
    notice = f"{common}:3: server=/consul/{LOOPBACK}#{consul.dns_port}: consul answered from"
    assert (notice in log) is with_http, log
