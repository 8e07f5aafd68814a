"""ConsulSource's watcher logic against a fake HTTP layer (no sockets).

The fake keeps Consul's blocking-query contract: a read with ``index`` at or above the
current index waits until something changes (or the test ends). Real-Consul behaviour
is covered by tests/integration/test_consul_*.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import consul.base
import pytest

from gateway.catalog.model import PASSING
from gateway.catalog.source import CatalogUnavailable
from gateway.consul import source as gc
from gateway.consul.http import (
    AioConsulHTTP,
    ConsulAddress,
    ConsulTransportError,
    HTTPResult,
    parse_address,
    request_headers,
    tls_context,
)
from gateway.consul.source import ConsulSource
from gateway.metrics import Metrics
from gateway.options import Config, ConfigError

TOKEN = "s3cret-token-0123"

pytestmark = pytest.mark.timeout(10)


def health_entry(service: str, address: str, status: str = PASSING) -> dict[str, Any]:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
        "Service": {
            "ID": f"{service}-{address}",
            "Service": service,
            "Address": address,
            "Port": 80,
        },
        "Checks": [{"CheckID": "serfHealth", "Status": status}],
    }


class FakeConsul:
    """Consul's HTTP API as a dict of bodies; blocking reads wait for ``change()``."""

    def __init__(self) -> None:
        self.index = 10
        self.bodies: dict[str, Any] = {
            "/v1/catalog/datacenters": ["dc1"],
            "/v1/catalog/services": {"consul": [], "web": []},
            "/v1/catalog/nodes": [{"Node": "n1", "Address": "10.0.0.1"}],
            "/v1/health/service/web": [health_entry("web", "10.0.1.1")],
        }
        self.statuses: dict[str, tuple[int, str]] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.down = False
        self.failing_dcs: set[str] = set()  # a remote datacenter unreachable over the WAN
        self.gates: dict[str, asyncio.Event] = {}  # reads of a path wait for its gate
        self.last_contact_ms = 0
        self._changed = asyncio.Event()

    def change(self, path: str, body: Any, *, index: int | None = None) -> None:
        self.bodies[path] = body
        self.index = self.index + 1 if index is None else index
        self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def set_down(self, down: bool) -> None:
        self.down = down
        self.wake()  # blocking reads in flight fail, as when Consul dies

    def requests(self, path: str) -> list[dict[str, str]]:
        return [params for p, params in self.calls if p == path]

    async def get(self, path: str, params: list[tuple[str, str]], timeout_s: float) -> HTTPResult:
        query = dict(params)
        self.calls.append((path, query))
        if path in self.gates:
            await self.gates[path].wait()
        if "index" in query and int(query["index"]) >= self.index and not self.down:
            await self._changed.wait()
        if self.down:
            raise ConsulTransportError("ClientConnectorError: connection refused")
        if query.get("dc") in self.failing_dcs:
            return HTTPResult(500, "rpc error: i/o timeout", self.index)
        if path in self.statuses:
            status, text = self.statuses[path]
            return HTTPResult(status, text, self.index)
        if path not in self.bodies and path.endswith("/execute"):
            return HTTPResult(404, "Query not found", self.index)
        body = self.bodies.get(path, [])
        return HTTPResult(200, json.dumps(body), self.index, self.last_contact_ms)

    async def close(self) -> None:
        return None


def config(**options: Any) -> Config:
    return Config(consul="http://127.0.0.1:8500", upstream=(), **options)


async def settle() -> None:
    """Let the watchers' tasks run until they are all waiting."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(test: Callable[[ConsulSource, FakeConsul], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        fake = FakeConsul()
        source = ConsulSource(config(**options), http=fake)
        await source.start()
        try:
            await settle()
            await test(source, fake)
        finally:
            await source.stop()

    asyncio.run(main())


# -- lazy watching ----------------------------------------------------------------


def test_first_query_fetches_then_watches_with_stale_blocking_reads() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
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
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        assert source.snapshot().services.get(("dc1", "nope")) == ()
        assert source.snapshot().services.get(("dc9", "web")) == ()  # unknown datacenter
        assert fake.requests("/v1/health/service/nope") == []

    run(test)


def test_a_change_swaps_the_view_and_an_identical_answer_does_not() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
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
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
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
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
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
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        fake.last_contact_ms = 5_000  # above consul_max_stale = 2 s
        await source.fetch_service("dc1", "web")
        stale, consistent = fake.requests("/v1/health/service/web")[:2]
        assert "stale" in stale and "stale" not in consistent
        assert source.stats["stale_retries"] >= 1

    run(test, consul_max_stale=2.0)


def test_watch_all_watches_every_listed_service() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        await settle()
        assert source.snapshot().services.get(("dc1", "web")) is not None
        assert {("dc1", "consul"), ("dc1", "web")} <= set(source.snapshot().services)
        assert source.stats["first_fetches"] == 0

    run(test, consul_watch_all=True)


def test_no_path_to_datacenter_is_known_absent() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        fake.statuses["/v1/health/service/web"] = (500, "No path to datacenter")
        await source.fetch_service("dc1", "web")
        assert source.snapshot().services.get(("dc1", "web")) == ()
        assert source.reachable

    run(test)


def test_names_unfit_for_a_url_are_absent_without_a_request() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
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
        source = ConsulSource(config(), http=fake)
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
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        gate = fake.gates["/v1/health/service/web"] = asyncio.Event()  # hold the read...
        fetch = asyncio.ensure_future(source.fetch_service("dc1", "web"))
        await settle()
        fake.change("/v1/catalog/services", {"consul": []})  # ...while web goes away
        await settle()
        gate.set()
        await asyncio.wait_for(fetch, 1.0)  # not CatalogUnavailable
        assert source.snapshot().services.get(("dc1", "web")) == ()

    run(test)


def test_blocking_reads_beyond_the_slots_queue_and_first_reads_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gc, "MAX_BLOCKING_READS", 2)
    names = [f"svc{i}" for i in range(5)]

    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        for name in names:
            fake.bodies[f"/v1/health/service/{name}"] = [health_entry(name, "10.0.3.1")]
        fake.change("/v1/catalog/services", {name: [] for name in names})
        await settle()
        # Every first read answers although the blocking slots are all taken.
        for name in names:
            await asyncio.wait_for(source.fetch_service("dc1", name), 1.0)
        await settle()
        metrics = Metrics()
        source.register_metrics(metrics)
        assert metrics.snapshot()["consul_watches_waiting_for_slot"] == 3
        reads = [q for p, q in fake.calls if p.startswith("/v1/health/") and "index" in q]
        # Two full-length reads began while there were no more watches than slots; the
        # third watch cut them short, and from then on reads block 5 s so slots go round.
        assert [q["wait"] for q in reads] == ["60000ms", "60000ms", "5000ms", "5000ms"]
        # The list watches never wait for a slot.
        assert any("index" in q for q in fake.requests("/v1/catalog/nodes"))
        # A change to a queued watch's service shows once it gets a slot.
        fake.change("/v1/health/service/svc4", [health_entry("svc4", "10.0.3.2")])
        await settle()
        (instance,) = source.snapshot().services[("dc1", "svc4")]
        assert instance.address == "10.0.3.2"

    run(test)


def test_idle_services_are_unwatched_unless_looked_up() -> None:
    now = [100.0]

    async def main() -> None:
        fake = FakeConsul()
        fake.bodies["/v1/catalog/services"] = {"web": [], "api": []}
        fake.bodies["/v1/health/service/api"] = [health_entry("api", "10.0.2.1")]
        source = ConsulSource(config(consul_idle_unwatch=60.0), http=fake, clock=lambda: now[0])
        await source.start()
        await settle()
        await source.fetch_service("dc1", "web")
        await source.fetch_service("dc1", "api")
        now[0] += 45
        source.snapshot().services.get(("dc1", "web"))  # the resolver's slow path
        now[0] += 30
        source._unwatch_idle()
        await settle()
        assert source.snapshot().services.get(("dc1", "web")) is not None
        assert source.snapshot().services.get(("dc1", "api")) is None  # to be fetched again
        await source.stop()

    asyncio.run(main())


# -- Consul away -------------------------------------------------------------------


def test_start_does_not_wait_for_consul_and_fetches_fail_fast() -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.down = True
        source = ConsulSource(config(), http=fake)
        await asyncio.wait_for(source.start(), 0.1)
        await settle()
        assert not source.snapshot().available
        with pytest.raises(CatalogUnavailable):
            await asyncio.wait_for(source.fetch_service("dc1", "web"), 0.1)
        with pytest.raises(CatalogUnavailable):
            await asyncio.wait_for(source.fetch_query("dc1", "pq"), 0.1)
        fake.set_down(False)
        for _ in range(50):  # the probe retries within PROBE_BACKOFF_MAX_S
            await asyncio.sleep(0.05)
            if source.snapshot().available:
                break
        assert source.snapshot().available
        await source.stop()

    asyncio.run(main())


def test_last_good_view_until_max_age_then_unavailable_then_back() -> None:
    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        await source.fetch_service("dc1", "web")
        fake.set_down(True)
        await settle()
        assert not source.reachable
        assert source.snapshot().available  # the last good view
        assert source.snapshot().services.get(("dc1", "web"))
        await asyncio.sleep(0.35)
        assert not source.snapshot().available
        assert source.view_age() >= 0.3
        fake.set_down(False)
        for _ in range(50):
            await asyncio.sleep(0.05)
            if source.snapshot().available:
                break
        assert source.snapshot().available and source.view_age() == 0

    run(test, consul_view_max_age=0.3)


def test_static_names_answer_while_consul_is_unusable() -> None:
    from gateway.catalog.model import Instance, Node, Snapshot

    static_instance = Instance("legacy", "l1", Node("s", "10.9.0.1", "dc1"), "", 80)
    static = Snapshot(services={("dc1", "legacy"): (static_instance,)})

    async def main() -> None:
        fake = FakeConsul()
        fake.down = True
        source = ConsulSource(config(), static=static, http=fake)
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


def test_prepared_query_is_kept_for_its_ttl_then_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "MIN_QUERY_CACHE_S", 0.1)

    async def test(source: ConsulSource, fake: FakeConsul) -> None:
        fake.bodies["/v1/query/pq/execute"] = {
            "Nodes": [health_entry("web", "10.0.1.1")],
            "DNS": {"TTL": ""},
            "Datacenter": "dc1",
        }
        await asyncio.gather(source.fetch_query("dc1", "pq"), source.fetch_query("dc1", "pq"))
        assert len(fake.requests("/v1/query/pq/execute")) == 1  # one execution for both
        result = source.snapshot().queries[("dc1", "pq")]
        assert result.ttl is None and len(result.instances) == 1
        await asyncio.sleep(0.2)
        assert ("dc1", "pq") not in source.snapshot().queries
        await source.fetch_query("dc1", "nope")  # 404: known absent for a while
        assert source.snapshot().queries[("dc1", "nope")].instances == ()

    run(test)


# -- token, TLS, address ------------------------------------------------------------------


class _CapturingHTTP:
    """Stands in for py-consul's aiohttp adapter: records what a request would send."""

    def __init__(self, fail: BaseException | None = None, status: int = 200) -> None:
        self.headers: list[dict[str, str]] = []
        self.fail = fail
        self.status = status

    async def get(self, callback: Any, path: str, **kwargs: Any) -> Any:
        self.headers.append(kwargs["headers"])
        if self.fail is not None:
            raise self.fail
        headers = {"X-Consul-Index": "7", "X-Consul-LastContact": "12"}
        body = {"/v1/catalog/datacenters": '["dc1"]', "/v1/catalog/services": "{}"}.get(path, "[]")
        if "index" in dict(kwargs["params"]):
            await asyncio.Event().wait()  # a blocking read: nothing changes
        return callback(consul.base.Response(self.status, headers, body))


def test_token_goes_into_the_header_and_nowhere_else(caplog: pytest.LogCaptureFixture) -> None:
    assert request_headers(TOKEN) == {"X-Consul-Token": TOKEN}
    assert request_headers(None) == {}
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        address = ConsulAddress("http", "127.0.0.1", 8500)
        http = AioConsulHTTP(address, token=TOKEN, tls=None)
        fake = _CapturingHTTP()
        http._http = lambda: fake  # type: ignore[method-assign]
        result = await http.get("/v1/catalog/nodes", [("stale", "")], 1.0)
        assert (result.index, result.last_contact_ms) == (7, 12)
        assert fake.headers == [{"X-Consul-Token": TOKEN}]

        # Errors and denials are logged; the token never is.
        source = ConsulSource(config(consul_token=TOKEN), http=http)
        await source.start()
        await settle()
        for name, failure in (("web", aiohttp.ClientConnectionError("refused")), ("api", None)):
            fake.fail, fake.status = failure, 403
            with pytest.raises(CatalogUnavailable):
                await source.fetch_service("dc1", name)
        await source.stop()
        assert TOKEN not in repr(http) + repr(source) + repr(config(consul_token=TOKEN))

    asyncio.run(main())
    assert "Consul denied /v1/health/service/api" in caplog.text
    assert "not reachable" in caplog.text
    assert TOKEN not in caplog.text


def test_transport_errors_become_consul_transport_error() -> None:
    async def main() -> None:
        http = AioConsulHTTP(ConsulAddress("http", "127.0.0.1", 8500), token=None, tls=None)
        http._http = lambda: _CapturingHTTP(TimeoutError())  # type: ignore[method-assign]
        with pytest.raises(ConsulTransportError, match="TimeoutError"):
            await http.get("/v1/catalog/nodes", [], 1.0)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8500", ConsulAddress("http", "127.0.0.1", 8500)),
        ("https://consul.local", ConsulAddress("https", "consul.local", 8501)),
        ("http://[::1]:8600/", ConsulAddress("http", "[::1]", 8600)),
    ],
)
def test_parse_address(url: str, expected: ConsulAddress) -> None:
    assert parse_address(url) == expected
    assert str(expected).startswith(expected.scheme + "://")


@pytest.mark.parametrize(
    "url", ["ftp://h", "http://h:99999", "http://h/consul", "http://u:p@h", "http://"]
)
def test_bad_addresses_name_the_option(url: str) -> None:
    with pytest.raises(ConfigError, match="option 'consul'"):
        parse_address(url)


def test_tls_context(tmp_path: Path) -> None:
    https = ConsulAddress("https", "127.0.0.1", 8501)
    assert tls_context(config(), ConsulAddress("http", "h", 1)) is None
    verified = tls_context(config(), https)
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    unverified = tls_context(config(consul_tls_verify=False), https)
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="consul_ca"):
        tls_context(config(consul_ca=bad), https)
