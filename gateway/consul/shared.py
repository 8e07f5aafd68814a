"""One Consul watcher for every ``--workers`` process.

Each worker answering queries used to run its own :class:`ConsulSource`: N
workers made N times the Consul requests and held N views. Now one watcher
process holds the source (:class:`SourceHub`) and sends every new snapshot
to each worker over a Unix socket pair; a worker's :class:`SharedSource` is
the :class:`~gateway.catalog.source.CatalogSource` its resolver reads, and
asks the watcher to fetch what a snapshot lacks (a first query, a prepared
query). So Consul sees one client per gateway whatever N is.

On the wire, each message is a 4-byte big-endian length and a pickle (both
ends are this program, forked from one parent; nothing else can reach the
socket pair). Watcher to worker: ``("snapshot", Snapshot)`` first, then
``("delta", parts)`` for each swap: only what changed (:func:`diff`), so a
change to one of 1,000 services moves one service, not the view;
``("done",
id, error or None)`` answering a fetch, ``("stats", {"families": [...],
"ready": bool})`` every second (the source's metric families as
``prometheus_client`` builds them, and whether its first view is in),
``("bye",)`` when it stops. Worker to watcher: ``("service", id, dc, name,
endpoint)``, ``("query", id, dc, name)`` and ``("touch", [keys])``, the
services the worker's slow path looked up (``(dc, name)``, or ``(endpoint,
dc, name)`` for a connect/ingress watch), batched every second so that idle
unwatch sees them.

A snapshot goes out before the answer to the fetch that made it (the
source swaps, which broadcasts, before a fetch returns), and one stream
keeps that order, so a worker reads the fetched service as soon as its
fetch returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import pickle
import socket
import struct
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from gateway.catalog.model import Snapshot
from gateway.catalog.source import CatalogSource, CatalogUnavailable
from gateway.consul.snapshot import ServiceView
from gateway.metrics import Metric, Metrics

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
# A snapshot of 10,000 services x 10 instances pickles to tens of MB.
MAX_MESSAGE_BYTES = 1 << 30
STATS_PERIOD_S = 1.0
TOUCH_FLUSH_S = 1.0

Key = tuple[str, str]


# -- snapshot deltas ------------------------------------------------------------

MapDelta = tuple[dict[Hashable, Any], list[Hashable]]


def map_delta(old: Mapping[Any, Any], new: Mapping[Any, Any]) -> MapDelta:
    """Entries new or replaced, and keys gone.

    Compared by identity: snapshot values are immutable and the watcher
    keeps an unchanged value's object from one view to the next, so a
    changed value is always a new object (an equal new object is merely
    sent for nothing).
    """
    changed = {key: value for key, value in new.items() if old.get(key) is not value}
    return changed, [key for key in old if key not in new]


def apply_map(old: Mapping[Any, Any], delta: MapDelta) -> dict[Any, Any]:
    changed, removed = delta
    merged = dict(old)
    merged.update(changed)
    for key in removed:
        merged.pop(key, None)
    return merged


def diff(old: Snapshot, new: Snapshot) -> dict[str, tuple[Any, ...]]:
    """What :func:`patch` needs to turn ``old`` into ``new``, field by field."""
    parts: dict[str, tuple[Any, ...]] = {}
    for spec in dataclasses.fields(Snapshot):
        before, after = getattr(old, spec.name), getattr(new, spec.name)
        if before is after:
            continue
        if isinstance(before, ServiceView) and isinstance(after, ServiceView):
            entries = map_delta(before.entries, after.entries)
            names = map_delta(before.names, after.names)
            parts[spec.name] = ("view", entries, names, after.datacenters)
        elif _views(before) and _views(after):
            # Snapshot.endpoints: a view per health endpoint, each sent as a delta.
            views = {
                kind: _view_delta(before.get(kind), view)
                for kind, view in after.items()
                if before.get(kind) is not view
            }
            parts[spec.name] = ("views", views, [kind for kind in before if kind not in after])
        elif isinstance(before, dict) and isinstance(after, dict):
            parts[spec.name] = ("map", map_delta(before, after))
        else:
            parts[spec.name] = ("value", after)
    return parts


def _views(value: Any) -> bool:
    """Whether ``value`` is a non-empty dict of :class:`ServiceView` values."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(view, ServiceView) for view in value.values())
    )


def _view_delta(before: ServiceView | None, after: ServiceView) -> tuple[Any, ...]:
    if before is None:
        return ("whole", after)
    return ("view", map_delta(before.entries, after.entries), map_delta(before.names, after.names),
            after.datacenters)  # fmt: skip


def _apply_view(before: ServiceView | None, delta: tuple[Any, ...]) -> ServiceView:
    if delta[0] == "whole" or before is None:
        whole: ServiceView = delta[1]
        return whole
    _, entries, names, datacenters = delta
    return ServiceView(
        apply_map(before.entries, entries), apply_map(before.names, names), datacenters
    )


def patch(old: Snapshot, parts: Mapping[str, tuple[Any, ...]]) -> Snapshot:
    """``old`` with the changes :func:`diff` found: the watcher's new snapshot."""
    changes: dict[str, Any] = {}
    for name, part in parts.items():
        kind, before = part[0], getattr(old, name)
        if kind == "view":
            _, entries, names, datacenters = part
            changes[name] = ServiceView(
                apply_map(before.entries, entries), apply_map(before.names, names), datacenters
            )
        elif kind == "views":
            _, views, gone = part
            merged = {k: v for k, v in before.items() if k not in gone}
            for key, delta in views.items():
                merged[key] = _apply_view(before.get(key), delta)
            changes[name] = merged
        elif kind == "map":
            changes[name] = apply_map(before, part[1])
        else:
            changes[name] = part[1]
    return dataclasses.replace(old, **changes)


class Writer(Protocol):
    """What is used of an :class:`asyncio.StreamWriter` (a fake in unit tests)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


def encode(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; raises IncompleteReadError when the other end is gone."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {size} bytes")
    message = pickle.loads(await reader.readexactly(size))
    if not isinstance(message, tuple) or not message:
        raise ValueError(f"not a message: {message!r:.100}")
    return message


async def _open(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # The default 64 KiB line limit does not apply to readexactly; no limit needed.
    return await asyncio.open_unix_connection(sock=sock)


class SourceHub:
    """The watcher process's side: one source, its snapshots sent to every worker."""

    def __init__(self, source: CatalogSource, metrics: Metrics) -> None:
        """``metrics`` holds the source's gauges; they are sent on as stats."""
        self._source = source
        self._metrics = metrics
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent: Snapshot | None = None  # what every worker holds

    async def serve(self, socks: list[socket.socket], stop: asyncio.Event) -> None:
        """Serves the workers at the other ends of ``socks`` until ``stop`` is set."""
        streams = [await _open(sock) for sock in socks]
        self._writers = [writer for _, writer in streams]
        self._source.on_change(self._broadcast)
        await self._source.start()
        self._broadcast()
        for reader, writer in streams:
            self._spawn(self._serve_worker(reader, writer))
        self._spawn(self._send_stats())
        try:
            await stop.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._send(("bye",))  # a stop, not a crash: the workers stop too
            for writer in self._writers:
                writer.close()
            await self._source.stop()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, message: tuple[Any, ...]) -> None:
        data = encode(message)
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(data)

    def _broadcast(self) -> None:
        """A new snapshot: what changed (the whole view the first time), one
        pickle written to every worker."""
        snapshot = self._source.snapshot()
        if self._sent is None:
            self._send(("snapshot", snapshot))
        elif snapshot is not self._sent:
            self._send(("delta", diff(self._sent, snapshot)))
        self._sent = snapshot

    async def _send_stats(self) -> None:
        while True:
            families = list(self._metrics.registered())
            self._send(("stats", {"families": families, "ready": not self._metrics.not_ready()}))
            await asyncio.sleep(STATS_PERIOD_S)

    async def _serve_worker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                message = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the worker is gone (shutting down)
            except Exception:
                log.exception("bad message from a worker; no longer serving it")
                writer.close()
                return
            kind = message[0]
            if kind == "touch":
                for key in message[1]:
                    if len(key) == 3:
                        self._source.touch_endpoint(*key)
                    else:
                        self._source.touch(*key)
            elif kind in ("service", "query"):
                self._spawn(self._fetch(writer, *message))

    async def _fetch(
        self,
        writer: asyncio.StreamWriter,
        kind: str,
        request: int,
        dc: str,
        name: str,
        endpoint: str = "service",
    ) -> None:
        error: str | None = None
        try:
            if kind == "service":
                await self._source.fetch_service(dc, name, endpoint)
            else:
                await self._source.fetch_query(dc, name)
        except CatalogUnavailable as exc:
            error = str(exc)
        except Exception as exc:  # a bug: the worker's query fails, the watcher goes on
            log.exception("fetching %s %s.%s for a worker failed", kind, name, dc)
            error = f"internal error: {exc!r}"
        if not writer.is_closing():
            writer.write(encode(("done", request, error)))


class SharedSource:
    """A worker's catalog: the watcher's snapshots, fetches asked of the watcher.

    Until the first snapshot arrives (milliseconds after start) the view is
    unavailable, so Consul names answer SERVFAIL as they do while a
    source of its own has not heard from Consul yet.
    """

    def __init__(self, sock: socket.socket | None, *, touch_flush_s: float = TOUCH_FLUSH_S) -> None:
        """``sock``: the worker's end of its socket pair (None: :meth:`attach` instead)."""
        self._sock = sock
        self._touch_flush_s = touch_flush_s
        self._snapshot = Snapshot(complete=False, available=False)
        self._callbacks: list[Callable[[], None]] = []
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._touched: set[tuple[str, ...]] = set()
        self._families: list[Metric] = []
        self._ready = False
        self._writer: Writer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return "SharedSource(the watcher process's view)"

    # -- CatalogSource --------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def touch(self, datacenter: str, name: str) -> None:
        self._touched.add((datacenter, name))

    def touch_endpoint(self, kind: str, datacenter: str, name: str) -> None:
        self._touched.add((kind, datacenter, name))

    async def fetch_service(self, datacenter: str, name: str, kind: str = "service") -> None:
        await self._ask("service", datacenter, name, kind)

    async def fetch_query(self, datacenter: str, name: str) -> None:
        await self._ask("query", datacenter, name)

    async def start(self) -> None:
        if self._sock is not None:
            self.attach(*await _open(self._sock))

    def attach(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        """Reads the watcher's messages from ``reader`` and writes to ``writer``."""
        self._writer = writer
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(reader)),
            loop.create_task(self._flush_touches()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
        self._fail_pending("the gateway is stopping")

    # -- metrics --------------------------------------------------------------

    def register_metrics(self, metrics: Metrics) -> None:
        """The watcher's Consul metrics, as it last sent them (the same in every
        worker), and its readiness."""
        metrics.gauge(
            "consul_shared_watcher", lambda: 1.0, "1: one watcher process serves the workers."
        )
        metrics.family(lambda: self._families)
        metrics.readiness("consul first view", lambda: self._ready)

    # -- the socket -----------------------------------------------------------

    async def _ask(self, kind: str, datacenter: str, name: str, *extra: str) -> None:
        if self._writer is None or self._writer.is_closing():
            raise CatalogUnavailable("the Consul watcher process is gone")
        request = next(self._ids)
        done = asyncio.get_running_loop().create_future()
        self._pending[request] = done
        try:
            self._writer.write(encode((kind, request, datacenter, name, *extra)))
            await done
        finally:
            self._pending.pop(request, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.error("the Consul watcher process is gone: the view no longer changes")
                self._fail_pending("the Consul watcher process is gone")
                return
            kind = message[0]
            if kind == "bye":
                self._fail_pending("the gateway is stopping")
                return
            if kind in ("snapshot", "delta"):
                if kind == "snapshot":
                    self._snapshot = message[1]
                else:
                    self._snapshot = patch(self._snapshot, message[1])
                for callback in self._callbacks:
                    try:
                        callback()
                    except Exception:  # one broken listener must not stop the others
                        log.exception("catalog change callback failed")
            elif kind == "done":
                _, request, error = message
                waiter = self._pending.get(request)
                if waiter is not None and not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(CatalogUnavailable(error))
            elif kind == "stats":
                self._families = list(message[1].get("families", []))
                self._ready = bool(message[1].get("ready"))

    async def _flush_touches(self) -> None:
        while True:
            await asyncio.sleep(self._touch_flush_s)
            if self._touched and self._writer is not None and not self._writer.is_closing():
                touched, self._touched = self._touched, set()
                self._writer.write(encode(("touch", sorted(touched))))

    def _fail_pending(self, reason: str) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(CatalogUnavailable(reason))
