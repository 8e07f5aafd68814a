"""Liveness transitions on a fake clock: down, view age, expiry, back, naps."""

from __future__ import annotations

import asyncio

import pytest

from gateway.catalog.source import CatalogUnavailable
from gateway.consul.liveness import Liveness
from tests.unit.consul.fakes import FakeClock, settle

pytestmark = pytest.mark.timeout(10)


class Watcher:
    """The callbacks a Liveness is given."""

    def __init__(self) -> None:
        self.ready = True
        self.backs = 0
        self.expiries = 0

    def liveness(self, clock: FakeClock, max_age_s: float = 60.0) -> Liveness:
        return Liveness(
            clock,
            address="http://127.0.0.1:8500",
            view_max_age_s=max_age_s,
            ready=lambda: self.ready,
            on_back=lambda: setattr(self, "backs", self.backs + 1),
            on_expired=lambda: setattr(self, "expiries", self.expiries + 1),
        )


def test_before_the_first_view_the_age_counts_from_the_start() -> None:
    clock, watcher = FakeClock(), Watcher()
    watcher.ready = False
    live = watcher.liveness(clock)
    clock.advance(7.5)
    assert not live.usable() and not live.reachable
    assert live.view_age() == 7.5
    with pytest.raises(CatalogUnavailable, match="not reached yet"):
        live.require_usable()
    live.mark_down("refused")
    assert clock.pending == []  # no view to expire


def test_the_last_good_view_is_usable_for_its_maximum_age_then_expires() -> None:
    clock, watcher = FakeClock(), Watcher()
    live = watcher.liveness(clock, max_age_s=60.0)
    assert live.reachable and live.usable() and live.view_age() == 0.0
    live.mark_down("refused")
    clock.advance(30.0)
    live.mark_down("again")  # still down since the first failure
    assert not live.reachable and live.down
    assert live.view_age() == 30.0 and live.usable()
    clock.advance(30.0)
    assert live.usable() and watcher.expiries == 0  # an age of exactly the maximum
    clock.advance(0.01)
    assert not live.usable() and watcher.expiries == 1
    with pytest.raises(CatalogUnavailable, match="older than 60s"):
        live.require_usable()
    clock.advance(600.0)
    assert watcher.expiries == 1


def test_back_before_expiry_cancels_it_and_tells_the_watcher_once() -> None:
    clock, watcher = FakeClock(), Watcher()
    live = watcher.liveness(clock, max_age_s=60.0)
    live.mark_up()
    assert watcher.backs == 0  # was never down
    live.mark_down("refused")
    clock.advance(10.0)
    live.mark_up()
    live.mark_up()
    assert watcher.backs == 1 and live.reachable and live.view_age() == 0.0
    assert clock.pending == []
    clock.advance(120.0)
    assert watcher.expiries == 0


def test_naps_end_on_time_or_when_consul_comes_back() -> None:
    async def main() -> None:
        clock, watcher = FakeClock(), Watcher()
        live = watcher.liveness(clock)
        short = asyncio.ensure_future(live.nap(1.0))
        long = asyncio.ensure_future(live.nap(10.0))
        await settle()
        clock.advance(1.0)
        await settle()
        assert short.done() and not long.done()
        live.mark_down("refused")
        await settle()
        assert not long.done()  # going away does not end a nap...
        live.mark_up()
        await settle()
        assert long.done()  # ...coming back does
        assert clock.pending == []  # its timer is gone too

    asyncio.run(main())


def test_the_probe_wait_ends_when_consul_goes_away() -> None:
    async def main() -> None:
        clock, watcher = FakeClock(), Watcher()
        live = watcher.liveness(clock)
        poll = asyncio.ensure_future(live.wait_for_outage(30.0))
        await settle()
        clock.advance(29.0)
        await settle()
        assert not poll.done()
        live.mark_down("refused")
        await settle()
        assert poll.done()
        again = asyncio.ensure_future(live.wait_for_outage(30.0))
        await settle()
        live.mark_down("still")  # already down: nothing new to wake for
        clock.advance(29.0)
        await settle()
        assert not again.done()
        clock.advance(1.0)
        await settle()
        assert again.done()

    asyncio.run(main())
