"""Leader loss in a three-server cluster: no failed answer while a new leader is elected.

The gateway talks to a follower that stays up. Its watches read with ``stale``, so the
follower answers from its own state without a leader; services asked for the first time
during the election are fetched the same way.
"""

from __future__ import annotations

import threading
import time

import dns.exception
import dns.rcode
import pytest

from harness.consul import ConsulCluster
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import wait_for
from tests.support.dnsclient import query

pytestmark = pytest.mark.timeout(120)

QUERY_INTERVAL_S = 0.02
LOOP_LIMIT_S = 60.0  # the query loop stops by itself even if the test body fails
FRESH_SERVICES = 40  # never asked before the leader is killed


class QueryLoop(threading.Thread):
    """Asks the gateway every QUERY_INTERVAL_S: a known service each time, and every
    tenth time a service it has not fetched yet (which needs a read from Consul)."""

    def __init__(self, gw: ConsulGateway) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.stop_flag = threading.Event()
        self.asked = 0
        self.failures: list[str] = []
        self.fresh_asked = 0

    def check(self, name: str, expected: str) -> None:
        self.asked += 1
        try:
            msg = query(self.gw.host, self.gw.port, name, "A", timeout=2.0)
        except dns.exception.Timeout:
            self.failures.append(f"{name}: timeout")
            return
        got = {rr.to_text() for rrset in msg.answer for rr in rrset}
        if msg.rcode() != dns.rcode.NOERROR or got != {expected}:
            self.failures.append(f"{name}: {dns.rcode.to_text(msg.rcode())} {got}")

    def run(self) -> None:
        deadline = time.monotonic() + LOOP_LIMIT_S
        i = 0
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            self.check("db.service.consul.", "127.0.0.50")
            if i % 10 == 0 and self.fresh_asked < FRESH_SERVICES:
                self.check(f"fresh{self.fresh_asked}.service.consul.", "127.0.0.51")
                self.fresh_asked += 1
            i += 1
            time.sleep(QUERY_INTERVAL_S)


def test_no_failed_answer_during_leader_election(knot: KnotUpstream) -> None:
    with ConsulCluster() as cluster:
        leader = cluster.leader_index()
        assert leader is not None
        follower = next(i for i in cluster.live() if i != leader)
        cluster.catalog_register(
            "ext-db", "127.0.0.50", service={"Service": "db", "ID": "db1", "Port": 1}
        )
        for k in range(FRESH_SERVICES):
            cluster.catalog_register(
                f"ext-fresh{k}",
                "127.0.0.51",
                service={"Service": f"fresh{k}", "ID": f"fresh{k}", "Port": 1},
            )
        server = cluster.servers[follower]
        wait_for(
            lambda: len(server.get("/v1/catalog/services", stale="")) == FRESH_SERVICES + 2,
            timeout=15,
            message="catalog replicated to the follower",
        )
        with ConsulGateway(server.http_addr, knot.address) as gw:
            wait_for(
                lambda: (
                    {
                        r.to_text()
                        for s in query(gw.host, gw.port, "db.service.consul", "A").answer
                        for r in s
                    }
                    == {"127.0.0.50"}
                ),
                timeout=15,
                message="the gateway's first view",
            )
            loop = QueryLoop(gw)
            loop.start()
            try:
                time.sleep(0.2)
                cluster.kill(leader)
                killed = time.monotonic()
                new_leader = cluster.wait_for_new_leader(excluding=leader, timeout=60)
                elected_after = time.monotonic() - killed
                time.sleep(0.5)  # and a little after the election
            finally:
                loop.stop_flag.set()
                loop.join(timeout=10)
            print(
                f"leader s{leader + 1} killed, s{new_leader + 1} elected after "
                f"{elected_after:.1f}s; {loop.asked} questions ({loop.fresh_asked} first "
                f"fetches), {len(loop.failures)} failed"
            )
            assert loop.fresh_asked > 0
            assert not loop.failures, loop.failures[:10]
            assert gw.metrics()["consul_http_errors_total"] == 0
