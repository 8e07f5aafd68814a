"""Prepared queries: executed on demand, each result kept for its DNS TTL.

A result is kept at least ``min_lifetime_s`` (Consul's default TTL of 0
would mean one HTTP request per DNS query). Concurrent first queries share
one execution. While Consul is away, expired results stay (the last good
view) until it is back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from gateway.catalog.model import PreparedResult
from gateway.catalog.source import CatalogUnavailable
from gateway.consul.clock import Clock, Timer
from gateway.consul.decode import BadResponse, json_body, prepared_result
from gateway.consul.http import ConsulError, ConsulStatusError, UnknownDatacenter
from gateway.consul.reader import Reader
from gateway.consul.snapshot import Key, safe_name
from gateway.consul.tasks import TaskSet

MIN_QUERY_CACHE_S = 1.0
# How often expiry looks again while Consul is away.
OUTAGE_RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class CachedQuery:
    result: PreparedResult
    expires: float  # on the clock


class QueryCache:
    """Prepared-query results by (datacenter, name), each until it expires."""

    def __init__(
        self,
        *,
        reader: Reader,
        tasks: TaskSet,
        clock: Clock,
        changed: Callable[[], None],
        consul_down: Callable[[], bool],
        min_lifetime_s: float = MIN_QUERY_CACHE_S,
        outage_recheck_s: float = OUTAGE_RECHECK_S,
    ) -> None:
        self._reader = reader
        self._tasks = tasks
        self._clock = clock
        self._changed = changed
        self._consul_down = consul_down
        self._min_lifetime_s = min_lifetime_s
        self._outage_recheck_s = outage_recheck_s
        self._cached: dict[Key, CachedQuery] = {}
        self._fetches: dict[Key, asyncio.Task[None]] = {}
        self._timer: Timer | None = None
        self.executions = 0

    def __len__(self) -> int:
        return len(self._cached)

    def results(self) -> dict[Key, PreparedResult]:
        return {key: cached.result for key, cached in self._cached.items()}

    async def fetch(self, dc: str, name: str, *, datacenters: frozenset[str] | None) -> None:
        """Executes the query (once for concurrent callers) and keeps its result.

        ``datacenters`` are the ones Consul knows (None: not known yet); a
        query in another, or one whose name cannot go into a URL, is known
        absent without a request.
        """
        key = (dc, name)
        if not safe_name(name) or (datacenters is not None and dc not in datacenters):
            self._store(key, PreparedResult((), None, dc), self._min_lifetime_s)
            return
        task = self._fetches.get(key)
        if task is None:
            task = self._tasks.spawn(self._execute(dc, name), f"query {name}.{dc}")
            self._fetches[key] = task
            task.add_done_callback(functools.partial(self._fetch_done, key))
        # Shielded: one caller's timeout must not cancel the others' fetch.
        await asyncio.shield(task)

    async def _execute(self, dc: str, name: str) -> None:
        self.executions += 1
        lifetime_s = self._min_lifetime_s
        try:
            result = await self._reader.read(f"/v1/query/{name}/execute", dc)
            prepared = prepared_result(json_body(result), dc)
            lifetime_s = max(float(prepared.ttl or 0), self._min_lifetime_s)
        except UnknownDatacenter:
            prepared = PreparedResult((), None, dc)
        except ConsulStatusError as exc:
            if exc.status != 404:  # 404: no such query, NXDOMAIN
                raise CatalogUnavailable(f"prepared query {name}: {exc}") from None
            prepared = PreparedResult((), None, dc)
        except (ConsulError, BadResponse) as exc:
            raise CatalogUnavailable(f"prepared query {name}: {exc}") from None
        self._store((dc, name), prepared, lifetime_s)

    def _fetch_done(self, key: Key, task: asyncio.Task[None]) -> None:
        self._fetches.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: the callers got it through the shield

    def _store(self, key: Key, result: PreparedResult, lifetime_s: float) -> None:
        self._cached[key] = CachedQuery(result, self._clock.now() + lifetime_s)
        self._arm()
        self._changed()

    def _arm(self) -> None:
        """Sets the timer for the soonest expiry."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._cached:
            return
        soonest = min(cached.expires for cached in self._cached.values())
        delay_s = max(0.0, soonest - self._clock.now())
        self._timer = self._clock.call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._consul_down():
            # Consul is away: keep the results (last good view) until it is back.
            self._timer = self._clock.call_later(self._outage_recheck_s, self._expire)
            return
        now = self._clock.now()
        expired = [key for key, cached in self._cached.items() if cached.expires <= now]
        for key in expired:
            del self._cached[key]
        if expired:
            self._changed()
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
