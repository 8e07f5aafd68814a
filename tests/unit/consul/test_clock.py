"""The clock's sleeps: an alarm wakes the sleepers of the moment, and only them."""

from __future__ import annotations

import asyncio

import pytest

from gateway.consul.clock import Alarm, MonotonicClock, sleep
from tests.unit.consul.fakes import FakeClock, settle

pytestmark = pytest.mark.timeout(10)


def test_an_alarm_wakes_who_sleeps_now_and_not_who_sleeps_later() -> None:
    async def main() -> None:
        clock = FakeClock()
        alarm = Alarm(clock)
        early = [asyncio.ensure_future(alarm.sleep(5.0)) for _ in range(2)]
        await settle()
        assert alarm.sleepers == 2
        alarm.ring()
        late = asyncio.ensure_future(alarm.sleep(5.0))
        await settle()
        assert all(task.done() for task in early) and not late.done()
        assert alarm.sleepers == 1 and clock.pending == [clock.now() + 5.0]
        clock.advance(5.0)
        await settle()
        assert late.done() and alarm.sleepers == 0

    asyncio.run(main())


def test_a_cancelled_sleep_leaves_no_timer() -> None:
    async def main() -> None:
        clock = FakeClock()
        task = asyncio.ensure_future(sleep(clock, 30.0))
        await settle()
        task.cancel()
        await settle()
        assert task.cancelled() and clock.pending == []

    asyncio.run(main())


def test_the_real_clock_is_monotonic_and_its_timers_run_on_the_loop() -> None:
    async def main() -> None:
        clock = MonotonicClock()
        before = clock.now()
        await asyncio.wait_for(sleep(clock, 0.0), 1.0)
        assert clock.now() >= before

    asyncio.run(main())
