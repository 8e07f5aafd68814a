"""The prepared-query cache on a fake clock: lifetimes, outages, shared executions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.catalog.source import CatalogUnavailable
from gateway.consul.liveness import Liveness
from gateway.consul.queries import QueryCache
from gateway.consul.reader import Reader
from gateway.consul.tasks import TaskSet
from tests.unit.consul.fakes import FakeClock, FakeConsul, health_entry, settle

pytestmark = pytest.mark.timeout(10)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.consul = FakeConsul()
        self.changes = 0
        self.liveness = Liveness(
            self.clock,
            address="http://127.0.0.1:8500",
            view_max_age_s=3600.0,
            ready=lambda: True,
            on_back=lambda: None,
            on_expired=lambda: None,
        )
        reader = Reader(self.consul, self.liveness, local="dc1", max_stale_s=10.0, token_set=False)
        self.tasks = TaskSet()
        self.cache = QueryCache(
            reader=reader,
            tasks=self.tasks,
            clock=self.clock,
            changed=self.changed,
            consul_down=lambda: self.liveness.down,
        )

    def changed(self) -> None:
        self.changes += 1

    def query(self, name: str, ttl: str = "", *instances: str) -> None:
        self.consul.bodies[f"/v1/query/{name}/execute"] = {
            "Nodes": [health_entry("web", address) for address in instances],
            "DNS": {"TTL": ttl},
            "Datacenter": "dc1",
        }

    def executions(self, name: str) -> int:
        return len(self.consul.requests(f"/v1/query/{name}/execute"))


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        harness = Harness()
        try:
            await test(harness)
        finally:
            harness.cache.stop()
            await harness.tasks.cancel_all()

    asyncio.run(main())


def test_a_result_is_kept_for_its_ttl_or_at_least_a_second() -> None:
    async def test(h: Harness) -> None:
        h.query("short", "", "10.0.1.1")
        h.query("long", "5s", "10.0.1.2")
        await h.cache.fetch("dc1", "short", datacenters=None)
        await h.cache.fetch("dc1", "long", datacenters=None)
        assert h.cache.results()[("dc1", "long")].ttl == 5
        assert h.changes == 2
        h.clock.advance(0.99)
        assert len(h.cache) == 2
        h.clock.advance(0.01)
        assert set(h.cache.results()) == {("dc1", "long")} and h.changes == 3
        h.clock.advance(3.99)
        assert len(h.cache) == 1
        h.clock.advance(0.01)
        assert len(h.cache) == 0 and h.changes == 4
        assert h.clock.pending == []  # nothing left to expire: no timer

    run(test)


def test_results_outlive_their_ttl_while_consul_is_away() -> None:
    async def test(h: Harness) -> None:
        h.query("pq", "", "10.0.1.1")
        await h.cache.fetch("dc1", "pq", datacenters=None)
        h.liveness.mark_down("refused")
        h.clock.advance(10.0)
        assert len(h.cache) == 1  # the last good view
        h.liveness.mark_up()
        h.clock.advance(0.99)  # checked again every OUTAGE_RECHECK_S (1 s)
        assert len(h.cache) == 1
        h.clock.advance(0.01)
        assert len(h.cache) == 0

    run(test)


def test_concurrent_callers_share_one_execution_and_one_timeout_spares_the_others() -> None:
    async def test(h: Harness) -> None:
        h.query("pq", "", "10.0.1.1")
        gate = h.consul.gates["/v1/query/pq/execute"] = asyncio.Event()
        impatient = asyncio.ensure_future(h.cache.fetch("dc1", "pq", datacenters=None))
        patient = asyncio.ensure_future(h.cache.fetch("dc1", "pq", datacenters=None))
        await settle()
        impatient.cancel()
        await settle()
        gate.set()
        await asyncio.wait_for(patient, 1.0)
        assert h.executions("pq") == 1 and h.cache.executions == 1
        assert ("dc1", "pq") in h.cache.results()

    run(test)


def test_absent_queries_are_kept_without_instances() -> None:
    async def test(h: Harness) -> None:
        known = frozenset({"dc1"})
        await h.cache.fetch("dc1", "a/../agent", datacenters=known)  # unfit for a URL
        await h.cache.fetch("dc9", "pq", datacenters=known)  # a datacenter Consul lacks
        assert h.consul.calls == []  # neither was asked
        await h.cache.fetch("dc1", "nope", datacenters=known)  # 404
        h.consul.statuses["/v1/query/remote/execute"] = (500, "No path to datacenter")
        await h.cache.fetch("dc1", "remote", datacenters=known)
        results = h.cache.results()
        assert len(results) == 4 and all(r.instances == () for r in results.values())
        h.clock.advance(1.0)
        assert len(h.cache) == 0

    run(test)


def test_a_failed_execution_is_unavailable_and_keeps_nothing() -> None:
    async def test(h: Harness) -> None:
        h.consul.statuses["/v1/query/pq/execute"] = (500, "rpc error")
        with pytest.raises(CatalogUnavailable, match="prepared query pq"):
            await h.cache.fetch("dc1", "pq", datacenters=None)
        h.consul.statuses.clear()
        h.consul.bodies["/v1/query/pq/execute"] = {"Nodes": "not a list"}
        with pytest.raises(CatalogUnavailable, match="prepared query pq"):
            await h.cache.fetch("dc1", "pq", datacenters=None)
        assert len(h.cache) == 0 and h.changes == 0

    run(test)
