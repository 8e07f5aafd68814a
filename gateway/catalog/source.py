"""Where catalog snapshots come from: the narrow interface the resolver sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.catalog.model import Snapshot


class CatalogUnavailable(Exception):
    """The catalog cannot answer now (Consul away, fetch timed out): SERVFAIL."""


class CatalogSource(Protocol):
    """A catalog view that may change over time.

    ``snapshot()`` is cheap and returns an immutable view. ``fetch_*``
    make a later snapshot cover a service or prepared query it lacked
    (``Snapshot.complete`` False) and raise CatalogUnavailable when that
    cannot be done in time. ``on_change`` callbacks run after every swap.
    ``touch`` is told of every service the answerer looks up in a snapshot
    (the slow path), ``touch_endpoint`` of every connect/ingress lookup (by
    kind): a source that watches services lazily keeps those. ``kind`` of
    ``fetch_service`` is the health endpoint ("service", "connect", "ingress").
    """

    def snapshot(self) -> Snapshot: ...

    def touch(self, datacenter: str, name: str) -> None: ...

    def touch_endpoint(self, kind: str, datacenter: str, name: str) -> None: ...

    async def fetch_service(self, datacenter: str, name: str, kind: str = "service") -> None: ...

    async def fetch_query(self, datacenter: str, name: str) -> None: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticSource:
    """A snapshot from service-definition files (or nothing); replaced on reload."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._callbacks: list[Callable[[], None]] = []

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def replace(self, snapshot: Snapshot) -> None:
        """Swaps in newly read files (SIGHUP) and tells the listeners."""
        self._snapshot = snapshot
        for callback in self._callbacks:
            callback()

    def touch(self, datacenter: str, name: str) -> None:
        return None

    def touch_endpoint(self, kind: str, datacenter: str, name: str) -> None:
        return None

    async def fetch_service(self, datacenter: str, name: str, kind: str = "service") -> None:
        return None

    async def fetch_query(self, datacenter: str, name: str) -> None:
        return None

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
