"""Stand-ins for the Consul watcher's edges: a manual clock and Consul's HTTP API.

The fake Consul keeps Consul's blocking-query contract: a read with ``index`` at
or above the current index waits until something changes (or the test ends).
Real-Consul behaviour is covered by tests/integration/test_consul_*.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.catalog.model import PASSING
from gateway.consul.http import ConsulTransportError, HTTPResult
from gateway.consul.source import ConsulSource, Tuning
from gateway.options import Config


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A :class:`~gateway.consul.clock.Clock` that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(delay_s, 0.0), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    @property
    def pending(self) -> list[float]:
        """When the live timers fire, soonest first."""
        return sorted(t.when for _, _, t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Moves the time on, firing each timer due on the way at its own time."""
        until = self._now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = until


async def settle() -> None:
    """Let the watchers' tasks run until they are all waiting."""
    for _ in range(20):
        await asyncio.sleep(0)


async def tick(clock: FakeClock, seconds: float, *, step_s: float = 0.05) -> None:
    """Moves ``clock`` on in steps, letting the tasks run after each."""
    steps = round(seconds / step_s)
    for _ in range(steps):
        clock.advance(step_s)
        await settle()


async def tick_until(
    clock: FakeClock, done: Callable[[], bool], *, limit_s: float, step_s: float = 0.05
) -> None:
    """Moves ``clock`` on in steps until ``done()``, at most ``limit_s``."""
    for _ in range(round(limit_s / step_s)):
        if done():
            return
        clock.advance(step_s)
        await settle()


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


def dump_node(
    node: str, address: str, services: list[tuple[str, str]], status: str = PASSING
) -> dict[str, Any]:
    """One node of /v1/internal/ui/nodes: its services (name, address), each with a
    check of ``status``, plus the node's serfHealth."""
    checks: list[dict[str, Any]] = [{"CheckID": "serfHealth", "ServiceID": "", "Status": PASSING}]
    entries = []
    for name, service_address in services:
        service_id = f"{name}-{service_address}"
        entries.append({"ID": service_id, "Service": name, "Address": service_address, "Port": 80})
        checks.append(
            {"CheckID": f"service:{service_id}", "ServiceID": service_id, "Status": status}
        )
    return {"Node": node, "Address": address, "Services": entries, "Checks": checks}


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


Test = Callable[[ConsulSource, FakeConsul, FakeClock], Awaitable[None]]


def run(test: Test, *, tuning: Tuning | None = None, **options: Any) -> None:
    """Runs ``test`` against a started source on a fake Consul and a fake clock."""

    async def main() -> None:
        fake = FakeConsul()
        clock = FakeClock()
        source = ConsulSource(config(**options), http=fake, clock=clock, tuning=tuning or Tuning())
        await source.start()
        try:
            await settle()
            await test(source, fake, clock)
        finally:
            await source.stop()

    asyncio.run(main())
