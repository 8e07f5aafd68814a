"""Running as a service (issue 10): systemd's sockets and notifications, --user, SIGTERM.

Each test starts the gateway as a subprocess the way a service manager would: with
sockets passed as systemd passes them (``tests.support.activate``), with a
``NOTIFY_SOCKET`` the test listens on, as root with ``--user``, and stopped with
SIGTERM while queries are still waiting on a slow scripted upstream.
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import socket
import struct
import sys
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from harness.consul import ConsulAgent
from harness.gateway import ConsulGateway, GatewayProcess
from harness.ports import free_port
from harness.process import wait_for
from tests.support.dnsclient import query
from tests.support.notify import NotifyListener
from tests.support.scripted import ScriptedUpstream, UpstreamThread, reply_to

# The embedded catalog's db service (zones/catalog).
DB_ADDRESS = "192.0.2.21"
# What the held upstream answers once the test lets it.
LATE_ADDRESS = "192.0.2.50"
# The watchdog interval asked for: WATCHDOG=1 comes at half of it.
WATCHDOG_USEC = 200_000
# How long the test waits for the gateway to exit, or for a reply, after SIGTERM.
EXIT_WAIT_S = 15.0
# Upstream waits far longer than the test, so only the shutdown decides.
PATIENT_FORWARDING = ("--forward-timeout", "30", "--forward-deadline", "60")


def activated(port: int, *args: str, env: dict[str, str]) -> GatewayProcess:
    """The gateway started with UDP and TCP sockets on ``port`` passed as systemd does.

    It is also given ``--listen`` on that port: binding it itself would fail (the
    sockets are taken), so answering proves it serves the passed ones.
    """
    address = f"127.0.0.1:{port}"
    launcher = (sys.executable, "-m", "tests.support.activate", "--udp", address,
                "--tcp", address, "--", sys.executable, "-m", "gateway")  # fmt: skip
    return GatewayProcess(*args, port=port, env=env, launcher=launcher, probe_name="consul.")


def test_passed_sockets_are_served_and_systemd_is_notified() -> None:
    port = free_port()
    with NotifyListener() as notify:
        env = {**notify.env, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        with activated(port, "--upstream", "127.0.0.1:9", env=env) as gw:
            notify.wait_for("READY=1")
            for tcp in (False, True):
                reply = query(gw.host, port, "db.service.consul", "A", tcp=tcp)
                assert {rr.address for rr in reply.answer[0]} == {DB_ADDRESS}
            assert "(UDP, passed by systemd)" in gw.log_text()
            assert "(TCP, passed by systemd)" in gw.log_text()
            assert notify.wait_for("WATCHDOG=1", times=3) >= 3
            status = [line for msg in notify.messages for line in msg if line.startswith("STATUS=")]
            assert f"STATUS=serving on 127.0.0.1:{port}" in status
            assert gw.pid is not None
            os.kill(gw.pid, signal.SIGHUP)  # systemctl reload: RELOADING=1, then READY=1
            notify.wait_for("RELOADING=1")
            notify.wait_for("READY=1", times=2)
            reply = query(gw.host, port, "db.service.consul", "A")  # still the passed sockets
            assert {rr.address for rr in reply.answer[0]} == {DB_ADDRESS}
            code = gw.stop()
        assert code == 0
        notify.wait_for("STOPPING=1")
        # READY came before the first answer was possible to ask for, STOPPING last.
        ready_at = next(i for i, m in enumerate(notify.messages) if "READY=1" in m)
        stopping_at = next(i for i, m in enumerate(notify.messages) if "STOPPING=1" in m)
        assert ready_at < stopping_at


def test_workers_share_the_passed_sockets() -> None:
    port = free_port()
    with NotifyListener() as notify:
        args = ("--workers", "2", "--upstream", "127.0.0.1:9")
        with activated(port, *args, env=notify.env) as gw:
            notify.wait_for("READY=1")
            for tcp in (False, True):
                for _ in range(4):  # whichever worker the kernel wakes
                    reply = query(gw.host, port, "db.service.consul", "A", tcp=tcp)
                    assert {rr.address for rr in reply.answer[0]} == {DB_ADDRESS}
            code = gw.stop()
            assert code == 0, gw.log_tail()
        notify.wait_for("STOPPING=1")


def _status_ids(pid: int, key: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return [int(v, 16) if key.startswith("Cap") else int(v) for v in line.split()[1:]]
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_user_binds_port_53_as_root_then_answers_as_nobody() -> None:
    assert os.geteuid() == 0, "the tests run as root (see rules): --user needs it"
    nobody = pwd.getpwnam("nobody")
    # Port 53 needs root; an address of its own in 127/8 keeps it apart from others.
    host = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
    with GatewayProcess("--user", "nobody", "--upstream", "127.0.0.1:9", host=host, port=53,
                        probe_name="consul.") as gw:  # fmt: skip
        assert gw.pid is not None
        for tcp in (False, True):
            reply = query(host, 53, "db.service.consul", "A", tcp=tcp)
            assert {rr.address for rr in reply.answer[0]} == {DB_ADDRESS}
        uid = nobody.pw_uid
        gid = nobody.pw_gid
        assert _status_ids(gw.pid, "Uid") == [uid] * 4  # real, effective, saved, filesystem
        assert _status_ids(gw.pid, "Gid") == [gid] * 4
        assert _status_ids(gw.pid, "Groups") == [gid]
        for caps in ("CapEff", "CapPrm", "CapAmb"):
            assert _status_ids(gw.pid, caps) == [0], caps
        assert "running as user nobody" in gw.log_text()
        # A reload reads the files again as nobody; root is not needed for it.
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: "reloaded:" in gw.log_text(), message="the reload as nobody")
        assert query(host, 53, "db.service.consul", "A").answer
        assert gw.stop() == 0


def _held_upstream() -> tuple[ScriptedUpstream, list[tuple[bytes, tuple[str, int]]]]:
    """An upstream that answers nothing until the test sends the replies itself."""
    held: list[tuple[bytes, tuple[str, int]]] = []
    upstream = ScriptedUpstream(lambda data, addr, sock: held.append((data, addr)))
    return upstream, held


def _tcp_ask(sock: socket.socket, name: str) -> int:
    msg = dns.message.make_query(name, "A")
    wire = msg.to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    return msg.id


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


def test_sigterm_answers_queries_in_flight_and_closes_tcp_after_its_reply() -> None:
    upstream, held = _held_upstream()
    with UpstreamThread(upstream):
        args = ("--upstream", upstream.address, *PATIENT_FORWARDING)
        with GatewayProcess(*args, probe_name="consul.") as gw:
            assert gw.pid is not None and gw.proc is not None
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.settimeout(EXIT_WAIT_S)
            udp_query = dns.message.make_query("slow-udp.example.", "A")
            udp.sendto(udp_query.to_wire(), (gw.host, gw.port))
            tcp = socket.create_connection((gw.host, gw.port), timeout=EXIT_WAIT_S)
            tcp_id = _tcp_ask(tcp, "slow-tcp.example.")
            wait_for(lambda: len(held) == 2, message="both queries at the upstream")

            os.kill(gw.pid, signal.SIGTERM)
            wait_for(lambda: "shutting down" in gw.log_text(), message="the shutdown to begin")
            with pytest.raises(ConnectionRefusedError):  # no longer accepting
                socket.create_connection((gw.host, gw.port), timeout=5).close()
            for data, addr in held:  # now the upstream answers
                upstream.udp.sendto(reply_to(data, LATE_ADDRESS), addr)

            reply = dns.message.from_wire(udp.recv(65535))
            assert reply.id == udp_query.id and reply.rcode() == dns.rcode.NOERROR
            assert {rr.address for rr in reply.answer[0]} == {LATE_ADDRESS}
            size = struct.unpack("!H", _read_exactly(tcp, 2))[0]
            reply = dns.message.from_wire(_read_exactly(tcp, size))
            assert reply.id == tcp_id and {rr.address for rr in reply.answer[0]} == {LATE_ADDRESS}
            assert tcp.recv(1) == b""  # then FIN: a clean end of stream, no reset
            assert gw.proc.wait(EXIT_WAIT_S) == 0
            assert "2 queries in flight" in gw.log_text()
            assert "2 queries answered while stopping" in gw.log_text()
            udp.close()
            tcp.close()


def test_sigterm_gives_servfail_to_what_is_still_out_at_the_stop_timeout() -> None:
    upstream, held = _held_upstream()
    with UpstreamThread(upstream):
        args = ("--upstream", upstream.address, "--stop-timeout", "0.5", *PATIENT_FORWARDING)
        with GatewayProcess(*args, probe_name="consul.") as gw:
            assert gw.pid is not None and gw.proc is not None
            tcp = socket.create_connection((gw.host, gw.port), timeout=EXIT_WAIT_S)
            tcp_id = _tcp_ask(tcp, "never.example.")
            wait_for(lambda: len(held) == 1, message="the query at the upstream")
            os.kill(gw.pid, signal.SIGTERM)
            size = struct.unpack("!H", _read_exactly(tcp, 2))[0]
            reply = dns.message.from_wire(_read_exactly(tcp, size))
            assert reply.id == tcp_id and reply.rcode() == dns.rcode.SERVFAIL
            assert tcp.recv(1) == b""
            assert gw.proc.wait(EXIT_WAIT_S) == 0
            assert "1 given SERVFAIL at --stop-timeout" in gw.log_text()
            tcp.close()


def test_ready_comes_once_the_first_consul_view_is_in() -> None:
    with ConsulAgent() as agent, NotifyListener() as notify:
        agent.register_service("web", address="127.0.0.10", port=80)
        with ConsulGateway(agent.http_addr, "127.0.0.1:9", env=notify.env) as gw:
            notify.wait_for("READY=1")
            # Nothing waited for after READY: the view was in before it was sent.
            assert gw.metrics()["consul_view_available"] == 1
            assert query(gw.host, gw.port, "dev1.node.consul", "A").rcode() == dns.rcode.NOERROR


def test_ready_with_workers_comes_once_the_shared_view_is_in() -> None:
    with ConsulAgent() as agent, NotifyListener() as notify:
        # A first-query timeout far beyond the wait: READY can only come from the view.
        # GatewayProcess, not ConsulGateway: worker 1's metrics port (+1) is not reserved.
        args = ("--consul", agent.http_addr, "--upstream", "127.0.0.1:9", "--workers", "2",
                "--consul-first-query-timeout", "30")  # fmt: skip
        with GatewayProcess(*args, env=notify.env, probe_name="consul.") as gw:
            notify.wait_for("READY=1", timeout=20)  # worker 0, fed by the watcher process
            assert "no Consul view after" not in gw.log_text()
            code = gw.stop()
            assert code == 0, gw.log_tail()


def test_ready_comes_after_the_first_query_timeout_when_consul_is_away() -> None:
    agent = ConsulAgent()  # its ports, nothing listening
    try:
        with NotifyListener() as notify:
            args = ("--consul-first-query-timeout", "0.5")
            with ConsulGateway(agent.http_addr, "127.0.0.1:9", *args, env=notify.env) as gw:
                notify.wait_for("READY=1")
                assert "no Consul view after 0.5 s: ready anyway" in gw.log_text()
                assert gw.metrics()["consul_view_available"] == 0
    finally:
        agent.close()
