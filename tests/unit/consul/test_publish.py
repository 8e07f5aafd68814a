"""Swapping the view: batching, pacing on a fake clock, listeners, released waiters."""

from __future__ import annotations

import asyncio

import pytest

from gateway.catalog.model import Snapshot
from gateway.consul.publish import Publisher
from tests.unit.consul.fakes import FakeClock, settle

pytestmark = pytest.mark.timeout(10)


class Builds:
    """A build function that counts its calls and may take (fake) time."""

    def __init__(self, clock: FakeClock, duration_s: float = 0.0) -> None:
        self.clock = clock
        self.duration_s = duration_s
        self.count = 0

    def __call__(self) -> Snapshot:
        self.count += 1
        self.clock.advance(self.duration_s)
        return Snapshot(serial=self.count)


def test_changes_in_one_loop_iteration_make_one_swap() -> None:
    async def main() -> None:
        clock = FakeClock()
        builds = Builds(clock)
        publisher = Publisher(builds, clock)
        assert publisher.snapshot.serial == 1 and publisher.swaps == 0
        heard: list[int] = []
        publisher.on_change(lambda: heard.append(publisher.snapshot.serial))
        for _ in range(3):
            publisher.changed()
        assert publisher.snapshot.serial == 1  # not before this iteration is done
        await settle()
        assert heard == [2] and publisher.swaps == 1
        publisher.flush()  # nothing changed: no rebuild
        assert builds.count == 2

    asyncio.run(main())


def test_waiters_go_on_after_the_swap_that_holds_their_data() -> None:
    async def main() -> None:
        clock = FakeClock()
        publisher = Publisher(Builds(clock), clock)
        seen: list[int] = []
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda _: seen.append(publisher.snapshot.serial))
        publisher.changed()
        publisher.release_after_swap([waiter])
        await settle()
        assert seen == [2]
        # Released with nothing to swap (the data was in already): still released.
        other: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        publisher.release_after_swap([other])
        await settle()
        assert other.done() and publisher.swaps == 1

    asyncio.run(main())


def test_a_broken_listener_does_not_stop_the_others() -> None:
    async def main() -> None:
        clock = FakeClock()
        publisher = Publisher(Builds(clock), clock)
        heard: list[str] = []

        def broken() -> None:
            raise RuntimeError("bug")

        publisher.on_change(broken)
        publisher.on_change(lambda: heard.append("second"))
        publisher.changed()
        await settle()
        assert heard == ["second"]

    asyncio.run(main())


def test_swaps_are_spaced_by_twice_the_time_a_rebuild_takes() -> None:
    async def main() -> None:
        clock = FakeClock()
        builds = Builds(clock)
        publisher = Publisher(builds, clock)
        builds.duration_s = 0.1  # a big catalog
        publisher.changed()
        await settle()
        assert publisher.swaps == 1
        publisher.changed()
        await settle()
        assert publisher.swaps == 1  # the next swap waits 0.2 s on the clock
        assert clock.pending == [pytest.approx(clock.now() + 0.2)]
        clock.advance(0.19)
        assert publisher.swaps == 1
        clock.advance(0.01)
        assert publisher.swaps == 2

    asyncio.run(main())


def test_changes_before_the_loop_runs_wait_for_the_next_one() -> None:
    clock = FakeClock()
    publisher = Publisher(Builds(clock), clock)
    publisher.changed()  # no running loop: nothing scheduled, nothing lost
    publisher.flush()
    assert publisher.swaps == 1
