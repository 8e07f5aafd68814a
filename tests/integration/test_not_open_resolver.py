"""Not an open resolver (issue 9): access control, response-rate limiting and the
amplification bound, tested with real processes in private network namespaces.

    namespace "a" 10.99.0.2/24 ---- 10.99.0.1/24  namespace "gw": the gateway (listening
    namespace "b" 10.99.1.2/24 ---- 10.99.1.1/24  on 127.0.0.1 and 10.99.0.1) and Knot

Client "a" is on the subnet of the listen address; client "b" reaches the same listen
address through another interface of the gateway's namespace, so by default it is not
local. Every non-loopback address lives inside these namespaces, which the fixture
deletes even when a test fails.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from harness.gateway import GatewayProcess, scrape_metrics
from harness.knot import KnotUpstream
from harness.ports import LOOPBACK, free_port
from harness.process import wait_for
from harness.zone import BIGTXT, BIGTXT_STRINGS, WWW, WWW_A
from tests.support.dnsclient import query
from tests.support.netns import Lan, entered

GW_A, CLIENT_A = "10.99.0.1", "10.99.0.2"
GW_B, CLIENT_B = "10.99.1.1", "10.99.1.2"
CATALOG_NAME = "web.service.consul."
ZONE_NAME = "nas.home.arpa."
METRIC_PREFIX = "dns_gateway_"
# The RRL burst: paced in small bursts so no socket buffer overflows and every
# query is accounted for (answered, slipped or dropped).
BURST_QUERIES = 1000
BURST_SIZE = 50
RATE = 5
SLIP = 3
QUIET_S = 0.05  # a drain ends after this long without a reply
FINAL_QUIET_S = 0.5
# Generous: the machine is shared; only a dropped query may time out.
ANSWER_TIMEOUT_S = 5.0
# How long a dropped query is waited for (a drop is the absence of any reply).
DROPPED_WAIT_S = 1.0
READY_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 0.2
SO_RCVBUFFORCE = 33  # root may exceed rmem_max: replies to a burst must not be lost here
CLIENT_RCVBUF = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def lan() -> Iterator[dict[str, str]]:
    net = Lan("i9acc")
    try:
        names = {role: net.namespace(role) for role in ("gw", "a", "b")}
        net.link(names["gw"], f"{GW_A}/24", names["a"], f"{CLIENT_A}/24")
        net.link(names["gw"], f"{GW_B}/24", names["b"], f"{CLIENT_B}/24")
        net.route(names["b"], GW_B)
        yield names
    finally:
        net.close()


@pytest.fixture(scope="module")
def knot(lan: dict[str, str]) -> Iterator[KnotUpstream]:
    """Knot on the loopback of the gateway's namespace."""
    with entered(lan["gw"]):
        server = KnotUpstream()
        server.start()
    try:
        yield server
    finally:
        server.close()


class NamespacedGateway:
    """The gateway in namespace "gw", listening on 127.0.0.1:port and 10.99.0.1:port."""

    def __init__(self, lan: dict[str, str], knot: KnotUpstream, *args: str) -> None:
        self.lan = lan
        with entered(lan["gw"]):
            self.port = free_port()
            self.metrics_port = free_port()
        self.process = GatewayProcess(
            "--upstream", knot.address, "--listen", f"{GW_A}:{self.port}",
            "--metrics-listen", f"{LOOPBACK}:{self.metrics_port}", *args,
            port=self.port, probe_name="consul.",
        )  # fmt: skip

    def start(self) -> NamespacedGateway:
        with entered(self.lan["gw"]):
            self.process.start()
        # The harness's probe proved the loopback listener; the gateway answers there
        # before it has bound 10.99.0.1, and a query sent in between meets a closed
        # port. Any reply from the namespace address proves that one too.
        probe = dns.message.make_query("consul.", "SOA").to_wire()
        wait_for(lambda: self.raw("a", probe, timeout=PROBE_TIMEOUT_S),
                 timeout=READY_TIMEOUT_S, message=f"{GW_A}:{self.port}")  # fmt: skip
        return self

    def close(self) -> None:
        self.process.close()

    def metrics(self) -> dict[str, float]:
        with entered(self.lan["gw"]):
            scraped = scrape_metrics(f"{LOOPBACK}:{self.metrics_port}")
        return {k.removeprefix(METRIC_PREFIX): v for k, v in scraped.items()}

    def ask(
        self,
        client: str,
        name: str,
        rdtype: str,
        *,
        tcp: bool = False,
        server: str = GW_A,
        port: int | None = None,
        timeout: float = ANSWER_TIMEOUT_S,
    ) -> dns.message.Message:
        """A query from namespace ``client`` ("a", "b" or "gw" for loopback)."""
        host = LOOPBACK if client == "gw" else server
        with entered(self.lan[client]):
            return query(host, port or self.port, name, rdtype, tcp=tcp, timeout=timeout)

    def raw(self, client: str, wire: bytes, *, timeout: float = ANSWER_TIMEOUT_S) -> bytes:
        """One UDP query from ``client`` as bytes, its reply as bytes."""
        host = LOOPBACK if client == "gw" else GW_A
        with entered(self.lan[client]), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(wire, (host, self.port))
            return sock.recv(65535)


@contextlib.contextmanager
def gateway(lan: dict[str, str], knot: KnotUpstream, *args: str) -> Iterator[NamespacedGateway]:
    gw = NamespacedGateway(lan, knot, *args)
    try:
        yield gw.start()
    except BaseException:
        print(f"gateway log:\n{gw.process.log_tail()}")  # shown by pytest on failure
        raise
    finally:
        gw.close()


@pytest.fixture(scope="module")
def default_gw(lan: dict[str, str], knot: KnotUpstream) -> Iterator[NamespacedGateway]:
    with gateway(lan, knot) as gw:
        yield gw


def allowed_networks(gw: NamespacedGateway) -> tuple[set[str], set[str]]:
    """The networks of the start-up line: (may query, get forwarded answers)."""
    line = next(line for line in gw.process.log_text().splitlines() if "access: " in line)
    queries = line.split("queries from ", 1)[1].split(";", 1)[0]
    forwarded = line.split("forwarded answers for ", 1)[1].split(";", 1)[0]
    return set(queries.split(", ")), set(forwarded.split(", "))


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


# --- access control ---------------------------------------------------------------------


def test_default_recurses_for_the_listen_subnet_and_refuses_other_subnets(
    default_gw: NamespacedGateway,
) -> None:
    gw = default_gw
    forwarded = gw.ask("a", WWW, "A")
    assert rcode(forwarded) == "NOERROR" and forwarded.answer[0][0].address == WWW_A
    assert gw.ask("a", CATALOG_NAME, "A").answer
    # Client b is routed to the same listen address from another subnet: not local.
    for tcp in (False, True):
        for name in (WWW, CATALOG_NAME):
            reply = gw.ask("b", name, "A", tcp=tcp)
            assert (rcode(reply), reply.answer) == ("REFUSED", []), (name, tcp)
    assert gw.ask("gw", WWW, "A").answer  # loopback
    # The default set was computed at start and logged on one line.
    queries, recursion = allowed_networks(gw)
    # The veth's IPv6 link-local subnet is local too.
    assert queries == recursion == {"127.0.0.0/8", "::1/128", "10.99.0.0/24", "fe80::/64"}
    assert gw.metrics()["access_refused_total"] == 4


def test_allow_without_recursion_gets_catalog_and_zone_answers_only(
    lan: dict[str, str], knot: KnotUpstream
) -> None:
    with gateway(lan, knot, "--allow", "local", "--allow", "10.99.1.0/24") as gw:
        assert gw.ask("a", WWW, "A").answer  # a recurses, and fills the cache
        for tcp in (False, True):
            assert gw.ask("b", CATALOG_NAME, "A", tcp=tcp).answer
            assert gw.ask("b", ZONE_NAME, "A", tcp=tcp).answer
            # Cached by a's query, still not b's: the fast path for b has no cache.
            refused = gw.ask("b", WWW, "A", tcp=tcp)
            assert (rcode(refused), refused.answer) == ("REFUSED", [])
        assert gw.metrics()["recursion_refused_total"] == 2
        queries, recursion = allowed_networks(gw)
        assert queries - recursion == {"10.99.1.0/24"}


def test_refuse_action_drop_sends_nothing(lan: dict[str, str], knot: KnotUpstream) -> None:
    with gateway(lan, knot, "--refuse-action", "drop") as gw:
        with pytest.raises(dns.exception.Timeout):
            gw.ask("b", CATALOG_NAME, "A", timeout=DROPPED_WAIT_S)
        with pytest.raises((ConnectionError, EOFError)):
            gw.ask("b", CATALOG_NAME, "A", tcp=True, timeout=DROPPED_WAIT_S)  # closed at once
        assert gw.ask("a", CATALOG_NAME, "A").answer
        assert gw.metrics()["access_dropped_total"] == 2


def test_a_dropped_forwarded_query_does_not_hold_its_tcp_connection(
    lan: dict[str, str], knot: KnotUpstream
) -> None:
    """A dropped query owes no reply: with one unanswered query allowed per
    connection, the next query on it is still read and answered."""
    args = ("--allow", "local", "--allow", "10.99.1.0/24", "--refuse-action", "drop",
            "--tcp-max-pipelined", "1")  # fmt: skip
    with gateway(lan, knot, *args) as gw:
        dropped = dns.message.make_query(WWW, "A")
        local = dns.message.make_query(CATALOG_NAME, "A")
        with entered(lan["b"]):
            sock = socket.create_connection((GW_A, gw.port), timeout=ANSWER_TIMEOUT_S)
        with sock:
            dns.query.send_tcp(sock, dropped)
            dns.query.send_tcp(sock, local)
            reply, _ = dns.query.receive_tcp(sock, time.time() + ANSWER_TIMEOUT_S)
        assert reply.id == local.id and reply.answer
        assert gw.metrics()["recursion_dropped_total"] == 1


def test_a_wildcard_listener_makes_every_interface_local(
    lan: dict[str, str], knot: KnotUpstream
) -> None:
    with entered(lan["gw"]):
        wildcard_port = free_port("0.0.0.0")
    with gateway(lan, knot, "--listen", f"0.0.0.0:{wildcard_port}") as gw:
        queries, _ = allowed_networks(gw)
        assert {"10.99.0.0/24", "10.99.1.0/24"} <= queries
        # (To b's own side: a wildcard UDP socket replies from the address the route
        # picks, which is 10.99.1.1 for b.)
        reply = gw.ask("b", WWW, "A", server=GW_B, port=wildcard_port)
        assert rcode(reply) == "NOERROR" and reply.answer


# --- response-rate limiting ----------------------------------------------------------------


def burst(sock: socket.socket, target: tuple[str, int], name: str) -> list[dns.message.Message]:
    """BURST_QUERIES queries for ``name``, paced in bursts; every reply that came back."""
    replies: list[bytes] = []

    def drain(quiet: float) -> None:
        sock.settimeout(quiet)
        while True:  # ends at the first quiet period
            try:
                replies.append(sock.recv(65535))
            except TimeoutError:
                return

    for first in range(0, BURST_QUERIES, BURST_SIZE):
        for msg_id in range(first, first + BURST_SIZE):
            msg = dns.message.make_query(name, "A", use_edns=False)
            msg.id = msg_id
            sock.sendto(msg.to_wire(), target)
        drain(QUIET_S)
    drain(FINAL_QUIET_S)
    return [dns.message.from_wire(r) for r in replies]


def udp_socket(lan: dict[str, str], client: str, bind: str) -> socket.socket:
    with entered(lan[client]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CLIENT_RCVBUF)
    sock.bind((bind, 0))
    return sock


def test_a_burst_is_mostly_dropped_and_every_third_limited_answer_slips(
    lan: dict[str, str], knot: KnotUpstream
) -> None:
    args = ("--rate-limit", str(RATE), "--rate-limit-slip", str(SLIP))
    with gateway(lan, knot, *args) as gw:
        # From a namespace address, as forged queries would come "from" a victim there.
        with udp_socket(lan, "a", CLIENT_A) as sock:
            replies = burst(sock, (GW_A, gw.port), CATALOG_NAME)
        full = [r for r in replies if not r.flags & dns.flags.TC]
        slipped = [r for r in replies if r.flags & dns.flags.TC]
        counts = gw.metrics()
        limited = counts["rrl_limited_total"]
        # Every query is accounted for: answered in full, slipped or dropped.
        assert len(full) + limited == BURST_QUERIES
        assert counts["rrl_slipped_total"] + counts["rrl_dropped_total"] == limited
        assert len(slipped) == counts["rrl_slipped_total"] == math.ceil(limited / SLIP)
        assert all(not r.answer and r.question for r in slipped)  # tiny TC=1 replies
        assert all(r.answer for r in full)
        # Mostly dropped: after the first RATE answers the block is limited for
        # --rate-limit-window seconds (15, far longer than the burst).
        assert len(full) < BURST_QUERIES // 10
        assert counts["rrl_dropped_total"] > BURST_QUERIES / 2
        # TCP is never limited: a slipped client's retry is answered.
        assert gw.ask("a", CATALOG_NAME, "A", tcp=True).answer
        # Loopback clients are not limited by default: the same burst is answered in full.
        with udp_socket(lan, "gw", LOOPBACK) as sock:
            local = burst(sock, (LOOPBACK, gw.port), CATALOG_NAME)
        assert len(local) == BURST_QUERIES and all(r.answer for r in local)
        assert gw.metrics()["rrl_limited_total"] == limited


# --- the amplification bound -------------------------------------------------------------


def small_query(name: str, rdtype: str) -> bytes:
    return dns.message.make_query(name, rdtype, use_edns=0, payload=1232).to_wire()


@pytest.mark.parametrize("rdtype", ["TXT", "ANY"])
def test_udp_answers_to_non_loopback_clients_are_at_most_ten_times_the_query(
    default_gw: NamespacedGateway, rdtype: str
) -> None:
    gw = default_gw
    wire = small_query(BIGTXT, rdtype)
    # Twice: the slow path (forwarded), then the fast path (from the cache).
    for _ in range(2):
        reply = gw.raw("a", wire)
        assert len(reply) <= 10 * len(wire), (len(reply), len(wire))
        msg = dns.message.from_wire(reply)  # cut at a record boundary: it parses
        assert msg.flags & dns.flags.TC and rcode(msg) == "NOERROR"
    # The client retries over TCP and gets everything.
    full = gw.ask("a", BIGTXT, "TXT", tcp=True)
    assert len(full.answer[0]) == len(BIGTXT_STRINGS)
    # Loopback is not bounded: the whole answer over UDP.
    local = dns.message.from_wire(gw.raw("gw", small_query(BIGTXT, "TXT")))
    assert not local.flags & dns.flags.TC and len(local.answer[0]) == len(BIGTXT_STRINGS)
    assert gw.metrics()["amplification_truncated_total"] >= 2
