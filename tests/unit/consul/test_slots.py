"""Blocking-read slots: queueing, full and shared waits, cutting long reads short."""

from __future__ import annotations

import asyncio

import pytest

from gateway.consul.slots import Slots, SlotShared
from tests.unit.consul.fakes import settle

pytestmark = pytest.mark.timeout(10)


class Reads:
    """Blocking reads that last until released; records the wait each asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.release = asyncio.Event()

    async def read(self, wait_s: float) -> float:
        self.waits.append(wait_s)
        await self.release.wait()
        return wait_s


def test_reads_beyond_the_slots_queue_and_get_the_full_wait_while_not_shared() -> None:
    async def main() -> None:
        slots = Slots(max_reads=2, shared_wait_s=5.0)
        slots.set_watches(2)
        reads = Reads()
        tasks = [asyncio.ensure_future(slots.read(reads.read, 60.0)) for _ in range(3)]
        await settle()
        assert reads.waits == [60.0, 60.0] and slots.waiting == 1
        reads.release.set()
        assert await asyncio.gather(*tasks) == [60.0, 60.0, 60.0]
        assert slots.waiting == 0

    asyncio.run(main())


def test_more_watches_than_slots_cut_long_reads_short_once_then_reads_are_short() -> None:
    async def main() -> None:
        slots = Slots(max_reads=2, shared_wait_s=5.0)
        slots.set_watches(2)
        reads = Reads()
        long = [asyncio.ensure_future(slots.read(reads.read, 60.0)) for _ in range(2)]
        queued = asyncio.ensure_future(slots.read(reads.read, 60.0))
        await settle()
        assert slots.waiting == 1
        slots.set_watches(3)  # a third watch: the full-length reads give way
        for task in long:
            with pytest.raises(SlotShared):
                await task
        await settle()
        assert reads.waits == [60.0, 60.0, 5.0]  # the queued one got a slot, shared
        assert slots.shared
        again = asyncio.ensure_future(slots.read(reads.read, 60.0))
        await settle()
        assert reads.waits[-1] == 5.0
        reads.release.set()
        assert list(await asyncio.gather(queued, again)) == [5.0, 5.0]

    asyncio.run(main())


def test_fewer_watches_never_cut_reads_and_a_short_wait_stays_short() -> None:
    async def main() -> None:
        slots = Slots(max_reads=1, shared_wait_s=5.0)
        slots.set_watches(1)
        reads = Reads()
        task = asyncio.ensure_future(slots.read(reads.read, 2.0))
        await settle()
        slots.set_watches(0)  # a watch stopped
        await settle()
        assert not task.done()
        slots.set_watches(3)
        with pytest.raises(SlotShared):
            await task
        short = asyncio.ensure_future(slots.read(reads.read, 2.0))
        await settle()
        assert reads.waits == [2.0, 2.0]  # min(consul_wait, shared wait)
        reads.release.set()
        await short

    asyncio.run(main())


def test_a_watch_stopped_during_its_read_is_cancelled_not_rearmed() -> None:
    async def main() -> None:
        slots = Slots(max_reads=1)
        slots.set_watches(1)
        reads = Reads()
        task = asyncio.ensure_future(slots.read(reads.read, 60.0))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The slot is free again.
        reads.release.set()
        assert await asyncio.wait_for(slots.read(reads.read, 60.0), 1.0) == 60.0

    asyncio.run(main())
