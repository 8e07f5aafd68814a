"""Sharing the connections that blocking reads hold.

Each blocking read holds a pooled connection for up to ``consul_wait``.
Their number is capped below the pool size (``consul_max_connections``,
:func:`blocking_slots`) so that first reads (a DNS query is waiting) and
prepared queries always find a connection. With more watches than slots,
watches queue for one and block at most ``shared_wait_s``, so the slots go
round: a change then shows within about watches / slots x 5 s instead of at
once (the price of HTTP/1.1 long polls). Service watches do not get there:
beyond the slots they are served by one read per datacenter
(:mod:`gateway.consul.dumps`); see the README on scale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

MAX_BLOCKING_READS = 120
SHARED_SLOT_WAIT_S = 5.0
# The share of the connection pool that blocking reads may hold; the rest
# is for first reads, prepared queries and the per-datacenter list watches.
BLOCKING_SHARE = 0.8


def blocking_slots(max_connections: int) -> int:
    """Slots for blocking reads in a pool of ``max_connections`` (120 of 150)."""
    return max(1, int(max_connections * BLOCKING_SHARE))


T = TypeVar("T")


class SlotShared(Exception):
    """A full-length blocking read was cut short to share the slots: read again."""


class Slots:
    """A fixed number of slots for blocking reads, shared once watches outnumber them."""

    def __init__(
        self, *, max_reads: int = MAX_BLOCKING_READS, shared_wait_s: float = SHARED_SLOT_WAIT_S
    ) -> None:
        self._max_reads = max_reads
        self._shared_wait_s = shared_wait_s
        self._free = asyncio.Semaphore(max_reads)
        self._watches = 0
        self._long_reads: set[asyncio.Task[Any]] = set()
        self.waiting = 0  # watches queued for a slot (a metric)

    @property
    def capacity(self) -> int:
        """How many blocking reads may run at once."""
        return self._max_reads

    @property
    def shared(self) -> bool:
        """More watches than slots: reads are short so that the slots go round."""
        return self._watches > self._max_reads

    def set_watches(self, count: int) -> None:
        """How many watches read through the slots now.

        When they come to outnumber the slots, full-length reads give way
        once (:class:`SlotShared`); otherwise the watches queued behind them
        would wait a whole ``consul_wait`` before the slots start going round.
        """
        grew = count > self._watches
        self._watches = count
        if grew and self.shared:
            for read in list(self._long_reads):
                read.cancel()

    async def read(self, read: Callable[[float], Coroutine[Any, Any, T]], wait_s: float) -> T:
        """``read(wait)`` in a slot: the full ``wait_s``, or a shorter wait when shared.

        Raises :class:`SlotShared` when a full-length read is cut short.
        """
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        try:
            if self.shared:
                return await read(min(wait_s, self._shared_wait_s))
            return await self._long_read(read(wait_s))
        finally:
            self._free.release()

    async def _long_read(self, coro: Coroutine[Any, Any, T]) -> T:
        """A read that :meth:`set_watches` may cut short."""
        read = asyncio.get_running_loop().create_task(coro)
        self._long_reads.add(read)
        try:
            return await read
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if read.cancelled() and current is not None and not current.cancelling():
                raise SlotShared() from None  # cut short, not stopped
            raise
        finally:
            self._long_reads.discard(read)
