"""A worker's SharedSource fed the watcher's messages (no sockets: a fed StreamReader)."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from gateway.catalog.model import CONNECT, INGRESS, Instance, Node, Snapshot
from gateway.catalog.source import CatalogUnavailable
from gateway.consul.shared import SharedSource, diff, encode, patch, receive
from gateway.consul.snapshot import build_snapshot
from gateway.metrics import Metrics, counter_family
from tests.unit.consul.fakes import settle

pytestmark = pytest.mark.timeout(10)

NODE = Node("n1", "10.0.0.1", "dc1")
WEB = (Instance("web", "web-1", NODE, "10.0.1.1", 80),)


class Written:
    """The writer half: what the worker sent to the watcher."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    async def messages(self) -> list[tuple[object, ...]]:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(self.data))
        reader.feed_eof()
        found = []
        while not reader.at_eof():
            found.append(await receive(reader))
        return found


def test_snapshots_stats_and_fetch_answers_from_the_watcher() -> None:
    async def main() -> None:
        reader, written = asyncio.StreamReader(), Written()
        source = SharedSource(None)
        metrics = Metrics()
        source.register_metrics(metrics)
        swaps: list[Snapshot] = []
        source.on_change(lambda: swaps.append(source.snapshot()))
        assert not source.snapshot().available  # until the watcher's first snapshot
        source.attach(reader, written)
        view = Snapshot(services={("dc1", "web"): WEB}, complete=False)
        reader.feed_data(encode(("snapshot", view)))
        assert metrics.not_ready() == ["consul first view"]  # until the watcher says so
        requests = counter_family("consul_http_requests", "Requests.", (), [((), 7.0)])
        reader.feed_data(encode(("stats", {"families": [requests], "ready": True})))
        await settle()
        assert source.snapshot().services[("dc1", "web")] == WEB
        assert len(swaps) == 1
        assert metrics.snapshot()["consul_http_requests_total"] == 7.0
        assert metrics.not_ready() == []
        # A fetch is asked of the watcher and returns with its answer.
        fetch = asyncio.ensure_future(source.fetch_service("dc1", "api"))
        failed = asyncio.ensure_future(source.fetch_query("dc1", "q"))
        await settle()
        assert await written.messages() == [
            ("service", 1, "dc1", "api", "service"),
            ("query", 2, "dc1", "q"),
        ]
        reader.feed_data(encode(("done", 1, None)) + encode(("done", 2, "no such query")))
        await asyncio.wait_for(fetch, 1.0)
        with pytest.raises(CatalogUnavailable, match="no such query"):
            await asyncio.wait_for(failed, 1.0)
        # The watcher gone: a waiting fetch fails rather than waiting for the timeout.
        waiting = asyncio.ensure_future(source.fetch_service("dc1", "db"))
        await settle()
        reader.feed_eof()
        with pytest.raises(CatalogUnavailable, match="gone"):
            await asyncio.wait_for(waiting, 1.0)
        await source.stop()

    asyncio.run(main())


def test_touches_are_sent_in_batches() -> None:
    async def main() -> None:
        reader, written = asyncio.StreamReader(), Written()
        source = SharedSource(None, touch_flush_s=0.01)
        source.attach(reader, written)
        for _ in range(1000):
            source.touch("dc1", "web")
        source.touch("dc1", "api")
        for _ in range(200):  # until the first flush (0.01 s), at most 2 s
            if written.data:
                break
            await asyncio.sleep(0.01)
        assert await written.messages() == [("touch", [("dc1", "api"), ("dc1", "web")])]
        await source.stop()

    asyncio.run(main())


def test_oversized_or_malformed_messages_are_refused() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((1 << 31).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="bytes"):
            await receive(reader)
        reader = asyncio.StreamReader()
        payload = pickle.dumps([1])
        reader.feed_data(len(payload).to_bytes(4, "big") + payload)
        with pytest.raises(ValueError, match="not a message"):
            await receive(reader)

    asyncio.run(main())


def test_a_delta_carries_only_what_changed_and_patches_to_the_new_view() -> None:
    api = (Instance("api", "api-1", NODE, "10.0.2.1", 80),)
    services = {("dc1", "web"): WEB, ("dc1", "api"): api, ("dc1", "db"): ()}
    names = {"dc1": frozenset({"web", "api", "db"})}
    nodes = {("dc1", "n1"): NODE}

    def build(services: dict[tuple[str, str], tuple[Instance, ...]]) -> Snapshot:
        return build_snapshot(
            static=None,
            services=services,
            names=names,
            datacenters=frozenset({"dc1"}),
            nodes=nodes,
            queries={},
            available=True,
        )

    old = build(services)
    moved = (Instance("api", "api-1", NODE, "10.0.2.2", 80),)
    new = build({("dc1", "web"): WEB, ("dc1", "api"): moved})  # api moved, db gone
    parts = diff(old, new)
    kind, (changed, removed), names_delta, _ = parts["services"]
    assert kind == "view" and changed == {("dc1", "api"): moved} and removed == [("dc1", "db")]
    assert names_delta == ({}, [])
    assert parts["nodes"] == ("map", ({}, []))  # a new dict, the same nodes: nothing sent
    patched = patch(old, parts)
    assert dict(patched.services.items()) == dict(new.services.items())
    assert patched.services.get(("dc1", "nope")) == ()  # the name lists came along
    assert (patched.nodes, patched.datacenters, patched.serial, patched.available) == (
        new.nodes,
        new.datacenters,
        new.serial,
        new.available,
    )
    # A worker applies the delta message to the snapshot it holds.

    async def main() -> None:
        reader, written = asyncio.StreamReader(), Written()
        source = SharedSource(None)
        source.attach(reader, written)
        reader.feed_data(encode(("snapshot", old)) + encode(("delta", parts)))
        await settle()
        assert source.snapshot().services[("dc1", "api")] == moved
        await source.stop()

    asyncio.run(main())


def test_connect_views_travel_as_deltas_too() -> None:
    """Issue 8's connect/ingress instances (Snapshot.endpoints) reach the workers as
    deltas per endpoint, not as the whole views on every swap."""
    names = {"dc1": frozenset({"web", "api"})}
    proxy = (Instance("web-sidecar-proxy", "p1", NODE, "10.0.3.1", 21000),)
    moved = (Instance("web-sidecar-proxy", "p1", NODE, "10.0.3.2", 21000),)

    def build(connect: dict[tuple[str, str], tuple[Instance, ...]]) -> Snapshot:
        return build_snapshot(
            static=None, services={("dc1", "web"): WEB}, names=names,
            datacenters=frozenset({"dc1"}), nodes={}, queries={}, available=True,
            endpoints={CONNECT: connect, INGRESS: {}},
        )  # fmt: skip

    old = build({("dc1", "web"): proxy})
    new = build({("dc1", "web"): moved})
    parts = diff(old, new)
    kind, views, gone = parts["endpoints"]
    assert kind == "views" and gone == []
    view_kind, (changed, removed), names_delta, _ = views[CONNECT]
    assert view_kind == "view" and changed == {("dc1", "web"): moved} and removed == []
    assert names_delta == ({}, [])  # the name lists are not sent again
    patched = patch(old, parts)
    assert patched.endpoints[CONNECT].get(("dc1", "web")) == moved
    assert patched.endpoints[CONNECT].get(("dc1", "nope")) == ()  # still settled by the list
    assert dict(patched.endpoints[INGRESS].items()) == {}
    # From a snapshot without them (a worker's first), the views come whole.
    first = patch(Snapshot(), diff(Snapshot(), new))
    assert first.endpoints[CONNECT].get(("dc1", "web")) == moved
