"""The watcher's one clock: the time now, timers, and sleeps measured on it.

Every duration, deadline and age in :mod:`gateway.consul` (view age, query
expiry, idle unwatch, backoff, swap pacing) is read from one injected
:class:`Clock` in monotonic seconds, and every wait is a timer of that same
clock, so unit tests move a manual clock instead of sleeping. The one
exception is the HTTP request timeout, which aiohttp keeps at the network
edge (:mod:`gateway.consul.http`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A pending call; ``asyncio.TimerHandle`` is one."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and timers on them."""

    def now(self) -> float: ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Calls ``callback`` on the running event loop ``delay_s`` from now."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and the running loop's timers.

    Deadlines are kept as ``now() + duration`` and turned back into delays
    when armed, so the loop's own time base (uvloop's differs) never shows.
    """

    # A plain C call: ``now`` is read on the slow path (idle tracking).
    now = staticmethod(time.monotonic)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay_s, callback)

    def __repr__(self) -> str:
        return "MonotonicClock()"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def sleep(clock: Clock, delay_s: float) -> None:
    """``asyncio.sleep`` on ``clock``."""
    await Alarm(clock).sleep(delay_s)


class Alarm:
    """Sleeps on a clock that :meth:`ring` ends early, all at once.

    Used where an event makes waiting pointless: Consul coming back wakes
    the watchers in backoff, Consul going away wakes the probe.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sleepers: set[asyncio.Future[None]] = set()

    async def sleep(self, delay_s: float) -> None:
        """Sleeps ``delay_s``, or less if :meth:`ring` is called meanwhile."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self._clock.call_later(delay_s, lambda: _wake(future))
        self._sleepers.add(future)
        try:
            await future
        finally:
            timer.cancel()
            self._sleepers.discard(future)

    def ring(self) -> None:
        """Wakes everyone sleeping now; later sleeps are not affected."""
        for future in self._sleepers:
            _wake(future)

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)
