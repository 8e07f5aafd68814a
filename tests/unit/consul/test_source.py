"""ConsulSource put together: its parts against a fake Consul and a fake clock.

No sockets and no real sleeps: time moves only when a test moves the fake
clock. Each part's own rules are tested in the test module named after it.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.catalog.model import CONNECT, INGRESS
from gateway.catalog.source import CatalogUnavailable
from gateway.consul.http import ConsulSetupError
from gateway.consul.source import ConsulSource, Tuning
from gateway.metrics import Metrics
from gateway.options import Config
from tests.unit.consul.fakes import (
    FakeClock,
    FakeConsul,
    config,
    dump_node,
    health_entry,
    run,
    settle,
    tick,
    tick_until,
)

pytestmark = pytest.mark.timeout(10)


# -- lazy watching ----------------------------------------------------------------


def test_first_query_fetches_then_watches_with_stale_blocking_reads() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        assert source.snapshot().services.get(("dc1", "web")) is None  # listed, not fetched
        await source.fetch_service("dc1", "web")
        (instance,) = source.snapshot().services[("dc1", "web")]
        assert instance.effective_address == "10.0.1.1"
        await settle()
        first, blocking = fake.requests("/v1/health/service/web")
        assert first == {"dc": "dc1", "stale": ""}
        assert blocking == {"dc": "dc1", "stale": "", "index": "10", "wait": "60000ms"}
        # Fetched already: no new request.
        await source.fetch_service("dc1", "web")
        assert len(fake.requests("/v1/health/service/web")) == 2

    run(test)


def test_unknown_service_is_known_absent_without_a_request() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        assert source.snapshot().services.get(("dc1", "nope")) == ()
        assert source.snapshot().services.get(("dc9", "web")) == ()  # unknown datacenter
        assert fake.requests("/v1/health/service/nope") == []

    run(test)


def test_a_change_swaps_the_view_and_an_identical_answer_does_not() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        swaps: list[int] = []
        source.on_change(lambda: swaps.append(1))
        await source.fetch_service("dc1", "web")
        await settle()
        before = source.snapshot()
        swaps.clear()
        fake.change("/v1/health/service/web", fake.bodies["/v1/health/service/web"])
        await settle()
        assert swaps == [] and source.snapshot() is before
        fake.change("/v1/health/service/web", [health_entry("web", "10.0.1.1", "critical")])
        await settle()
        assert swaps == [1]
        assert source.snapshot().services[("dc1", "web")][0].status == "critical"

    run(test)


def test_service_leaving_the_list_stops_its_watch() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        await source.fetch_service("dc1", "web")
        fake.change("/v1/catalog/services", {"consul": []})
        await settle()
        assert source.snapshot().services.get(("dc1", "web")) == ()
        assert source.register_metrics is not None
        metrics = Metrics()
        source.register_metrics(metrics)
        assert metrics.snapshot()["consul_watched_services"] == 0

    run(test)


def test_index_going_backwards_restarts_with_a_plain_read() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        await source.fetch_service("dc1", "web")
        await settle()
        fake.change("/v1/health/service/web", [health_entry("web", "10.0.1.9")], index=3)
        await settle()
        blocked, reset, blocking = fake.requests("/v1/health/service/web")[-3:]
        assert blocked["index"] == "10"
        assert "index" not in reset  # went backwards: a plain read
        assert blocking["index"] == "3"
        assert source.snapshot().services[("dc1", "web")][0].address == "10.0.1.9"

    run(test)


def test_too_stale_answer_is_asked_again_of_the_leader() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        fake.last_contact_ms = 5_000  # above consul_max_stale = 2 s
        await source.fetch_service("dc1", "web")
        stale, consistent = fake.requests("/v1/health/service/web")[:2]
        assert "stale" in stale and "stale" not in consistent
        assert source.stats["stale_retries"] >= 1

    run(test, consul_max_stale=2.0)


def test_watch_all_watches_every_listed_service() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        await settle()
        assert source.snapshot().services.get(("dc1", "web")) is not None
        assert {("dc1", "consul"), ("dc1", "web")} <= set(source.snapshot().services)
        assert source.stats["first_fetches"] == 0

    run(test, consul_watch_all=True)


def test_no_path_to_datacenter_is_known_absent() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        fake.statuses["/v1/health/service/web"] = (500, "No path to datacenter")
        await source.fetch_service("dc1", "web")
        assert source.snapshot().services.get(("dc1", "web")) == ()
        assert source.reachable

    run(test)


def test_names_unfit_for_a_url_are_absent_without_a_request() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        for name in ("a/../../agent/self", "web%2f", "x?y"):
            assert source.snapshot().services.get(("dc1", name)) == ()
            await source.fetch_service("dc1", name)
            await source.fetch_query("dc1", name)
            assert source.snapshot().queries[("dc1", name)].instances == ()
        await source.fetch_query("dc9", "pq")  # a datacenter Consul does not know
        assert source.snapshot().queries[("dc9", "pq")].instances == ()
        paths = {path for path, _ in fake.calls}
        assert paths <= {"/v1/catalog/datacenters", "/v1/catalog/services", "/v1/catalog/nodes"}

    run(test)


def test_every_datacenter_is_watched_and_remote_failures_keep_the_view() -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.bodies["/v1/catalog/datacenters"] = ["dc1", "dc2"]
        source = ConsulSource(config(), http=fake, clock=FakeClock())
        await source.start()
        await settle()
        assert ("dc2", "n1") in source.snapshot().nodes  # <node>.node.dc2 needs no fetch
        await source.fetch_service("dc2", "web")
        assert {"dc": "dc2", "stale": ""} in fake.requests("/v1/health/service/web")
        fake.failing_dcs.add("dc2")
        fake.change("/v1/health/service/web", [health_entry("web", "10.0.1.2")])
        await settle()
        # A remote datacenter's trouble says nothing about the local agent.
        assert source.reachable and source.snapshot().available
        assert source.snapshot().services[("dc2", "web")][0].address == "10.0.1.1"
        await source.stop()

    asyncio.run(main())


def test_first_query_racing_a_deregistration_gets_the_list_answer() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        gate = fake.gates["/v1/health/service/web"] = asyncio.Event()  # hold the read...
        fetch = asyncio.ensure_future(source.fetch_service("dc1", "web"))
        await settle()
        fake.change("/v1/catalog/services", {"consul": []})  # ...while web goes away
        await settle()
        gate.set()
        await asyncio.wait_for(fetch, 1.0)  # not CatalogUnavailable
        assert source.snapshot().services.get(("dc1", "web")) == ()

    run(test)


def test_watches_beyond_the_slots_are_served_by_one_node_dump_per_datacenter() -> None:
    names = [f"svc{i}" for i in range(5)]
    dump = "/v1/internal/ui/nodes"

    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        metrics = Metrics()
        source.register_metrics(metrics)
        for name in names:
            fake.bodies[f"/v1/health/service/{name}"] = [health_entry(name, "10.0.3.1")]
        fake.bodies[dump] = [dump_node("n1", "10.0.0.1", [(n, "10.0.3.1") for n in names])]
        fake.change("/v1/catalog/services", {name: [] for name in names})
        await settle()
        # Two watches fit the two slots; the third makes the node dump serve them all.
        for name in names:
            await asyncio.wait_for(source.fetch_service("dc1", name), 1.0)
        await settle()
        assert metrics.snapshot()["consul_node_dumps"] == 1
        assert metrics.snapshot()["consul_watches_waiting_for_slot"] == 0
        read = {p.rsplit("/", 1)[1] for p, _ in fake.calls if p.startswith("/v1/health/service/")}
        assert read == {"svc0", "svc1"}  # svc2-4 came from the dump
        assert [q for q in fake.requests(dump) if "index" in q]  # one blocking read
        # A change anywhere in the datacenter shows through the dump: a new address,
        # a registration without checks, a failing check.
        calls = len(fake.calls)
        changed = [(n, "10.0.3.1") for n in names[:3]] + [("svc3", "10.0.3.2")]
        fake.change(
            dump,
            [
                dump_node("n1", "10.0.0.1", changed),
                dump_node("n2", "10.0.0.2", [("svc4", "10.0.4.1")], status="critical"),
                {"Node": "n3", "Address": "10.0.0.3", "Services": [{"Service": "svc0"}]},
            ],
        )
        await settle()
        view = source.snapshot().services
        assert [i.address for i in view[("dc1", "svc3")]] == ["10.0.3.2"]
        assert [i.status for i in view[("dc1", "svc4")]] == ["critical"]
        assert sorted(i.effective_address for i in view[("dc1", "svc0")]) == [
            "10.0.0.3",
            "10.0.3.1",
        ]
        # One request for the change (the fake's one index also wakes the list watches).
        after = [p for p, _ in fake.calls[calls:] if not p.startswith("/v1/catalog/")]
        assert after == [dump]
        # Back within the slots (a margin below them), each service reads on its own.
        fake.change("/v1/catalog/services", {"svc0": []})
        await settle()
        assert metrics.snapshot()["consul_node_dumps"] == 0
        assert [q for q in fake.requests("/v1/health/service/svc0") if "index" in q]
        fake.change("/v1/health/service/svc0", [health_entry("svc0", "10.0.3.9")])
        await settle()
        (instance,) = source.snapshot().services[("dc1", "svc0")]
        assert instance.address == "10.0.3.9"

    run(test, tuning=Tuning(max_blocking_reads=2))


def test_blocking_slots_come_from_the_connection_limit() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        names = [f"svc{i}" for i in range(4)]
        fake.change("/v1/catalog/services", {name: [] for name in names})
        await settle()
        for name in names:
            await asyncio.wait_for(source.fetch_service("dc1", name), 1.0)
        await settle()
        metrics = Metrics()
        source.register_metrics(metrics)
        # 5 connections leave 4 slots (a fifth stays free): 4 watches read on their own.
        assert metrics.snapshot()["consul_node_dumps"] == 0
        await asyncio.wait_for(source.fetch_service("dc1", "web"), 1.0)
        assert metrics.snapshot()["consul_node_dumps"] == 1

    run(test, consul_max_connections=5)


def test_idle_services_are_unwatched_unless_looked_up() -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.bodies["/v1/catalog/services"] = {"web": [], "api": []}
        fake.bodies["/v1/health/service/api"] = [health_entry("api", "10.0.2.1")]
        clock = FakeClock()
        source = ConsulSource(config(consul_idle_unwatch=60.0), http=fake, clock=clock)
        await source.start()
        await settle()
        await source.fetch_service("dc1", "web")
        await source.fetch_service("dc1", "api")
        # The idle sweep runs every 15 s (a quarter of consul_idle_unwatch).
        await tick(clock, 45, step_s=1.0)
        assert len(source.snapshot().services) == 2  # not idle yet
        source.touch("dc1", "web")  # the resolver's slow path
        await tick(clock, 30, step_s=1.0)
        assert source.snapshot().services.get(("dc1", "web")) is not None
        assert source.snapshot().services.get(("dc1", "api")) is None  # to be fetched again
        await source.stop()

    asyncio.run(main())


# -- Consul away -------------------------------------------------------------------


def test_start_does_not_wait_for_consul_and_fetches_fail_fast() -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.down = True
        clock = FakeClock()
        source = ConsulSource(config(), http=fake, clock=clock)
        await asyncio.wait_for(source.start(), 0.1)
        await settle()
        assert not source.snapshot().available
        with pytest.raises(CatalogUnavailable):
            await asyncio.wait_for(source.fetch_service("dc1", "web"), 0.1)
        with pytest.raises(CatalogUnavailable):
            await asyncio.wait_for(source.fetch_query("dc1", "pq"), 0.1)
        fake.set_down(False)
        # The probe retries within PROBE_BACKOFF_MAX_S (1 s), one step of 0.05 s on top.
        await tick_until(clock, lambda: source.snapshot().available, limit_s=1.05)
        assert source.snapshot().available
        await source.stop()

    asyncio.run(main())


def test_last_good_view_until_max_age_then_unavailable_then_back() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        await source.fetch_service("dc1", "web")
        fake.set_down(True)
        await settle()
        assert not source.reachable
        assert source.snapshot().available  # the last good view
        assert source.snapshot().services.get(("dc1", "web"))
        await tick(clock, 0.25)
        assert source.snapshot().available  # younger than consul_view_max_age
        await tick(clock, 0.1)
        assert not source.snapshot().available
        assert source.view_age() >= 0.3
        fake.set_down(False)
        await tick_until(clock, lambda: source.snapshot().available, limit_s=2.5)
        assert source.snapshot().available and source.view_age() == 0

    run(test, consul_view_max_age=0.3)


def test_static_names_answer_while_consul_is_unusable() -> None:
    from gateway.catalog.model import Instance, Node, Snapshot

    static_instance = Instance("legacy", "l1", Node("s", "10.9.0.1", "dc1"), "", 80)
    static = Snapshot(services={("dc1", "legacy"): (static_instance,)})

    async def main() -> None:
        fake = FakeConsul()
        fake.down = True
        source = ConsulSource(config(), static=static, http=fake, clock=FakeClock())
        await source.start()
        await settle()
        snap = source.snapshot()
        assert snap.available
        assert snap.services.get(("dc1", "legacy")) == (static_instance,)
        assert snap.services.get(("dc1", "web")) is None  # fetched: SERVFAIL
        with pytest.raises(CatalogUnavailable):
            await source.fetch_service("dc1", "web")
        await source.stop()

    asyncio.run(main())


# -- prepared queries ----------------------------------------------------------------


def test_prepared_query_is_kept_for_its_ttl_then_dropped() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        fake.bodies["/v1/query/pq/execute"] = {
            "Nodes": [health_entry("web", "10.0.1.1")],
            "DNS": {"TTL": ""},
            "Datacenter": "dc1",
        }
        await asyncio.gather(source.fetch_query("dc1", "pq"), source.fetch_query("dc1", "pq"))
        assert len(fake.requests("/v1/query/pq/execute")) == 1  # one execution for both
        result = source.snapshot().queries[("dc1", "pq")]
        assert result.ttl is None and len(result.instances) == 1
        await tick(clock, 0.95)  # no TTL: kept MIN_QUERY_CACHE_S (1 s)
        assert ("dc1", "pq") in source.snapshot().queries
        await tick(clock, 0.1)
        assert ("dc1", "pq") not in source.snapshot().queries
        await source.fetch_query("dc1", "nope")  # 404: known absent for a while
        assert source.snapshot().queries[("dc1", "nope")].instances == ()

    run(test)


def test_consul_option_is_required() -> None:
    with pytest.raises(ConsulSetupError, match="option 'consul'"):
        ConsulSource(Config(upstream=()))


def test_services_watched_from_the_start_are_never_idle() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        await settle()
        assert ("dc1", "web") in source.snapshot().services
        await tick(clock, 120, step_s=5.0)  # twice consul_idle_unwatch, never looked up
        assert ("dc1", "web") in source.snapshot().services
        assert source.stats["first_fetches"] == 0

    run(test, consul_watch_all=True, consul_idle_unwatch=60.0)


# -- the mesh and peer name forms (issue 8) -----------------------------------------


def test_connect_and_ingress_watch_their_own_health_endpoints() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        proxy = health_entry("web-sidecar-proxy", "10.0.2.1")
        proxy["Service"]["TaggedAddresses"] = {"consul-virtual": {"Address": "240.0.0.9"}}
        fake.bodies["/v1/health/connect/web"] = [proxy]
        fake.bodies["/v1/health/ingress/web"] = [health_entry("ig", "10.0.3.1")]
        await source.fetch_service("dc1", "web", CONNECT)
        await source.fetch_service("dc1", "web", INGRESS)
        snap = source.snapshot()
        assert [i.virtual_ip for i in snap.endpoints[CONNECT][("dc1", "web")]] == ["240.0.0.9"]
        assert [i.address for i in snap.endpoints[INGRESS][("dc1", "web")]] == ["10.0.3.1"]
        assert snap.services.get(("dc1", "web")) is None  # the service itself: not fetched
        # Settled by the service list like services: no request for an unknown name.
        assert snap.endpoints[CONNECT].get(("dc1", "nope")) == ()
        await settle()
        assert len(fake.requests("/v1/health/connect/web")) == 2  # first read, then blocking
        # Leaving Consul's list stops the watch and forgets its instances.
        fake.change("/v1/catalog/services", {"consul": []})
        await tick_until(clock, lambda: not source.snapshot().endpoints[CONNECT], limit_s=5)

    run(test)


def test_peer_services_are_read_with_the_peer_parameter() -> None:
    async def test(source: ConsulSource, fake: FakeConsul, clock: FakeClock) -> None:
        # A peer is no datacenter of Consul's list, yet not known absent.
        assert source.snapshot().services.get(("pa.peer", "web")) is None
        await source.fetch_service("pa.peer", "web")
        assert [i.address for i in source.snapshot().services[("pa.peer", "web")]] == ["10.0.1.1"]
        assert fake.requests("/v1/health/service/web")[0] == {"peer": "pa", "stale": ""}
        # A peer name that cannot be one is known absent without a request.
        assert source.snapshot().services.get(("a%2f.peer", "web")) == ()

    run(test)
