"""When the view is swapped: one rebuild for everything that changed meanwhile.

The watcher's parts call :meth:`Publisher.changed` whenever what they hold
changes; the publisher rebuilds the whole snapshot at most once per loop
iteration, tells the ``on_change`` listeners (the resolver drops its
prepared answers), and only then lets first queries waiting for a service
go on, so they read the snapshot that holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from gateway.catalog.model import Snapshot
from gateway.consul.clock import Clock

log = logging.getLogger(__name__)

# A swap rebuilds the whole view (O(services)). Swaps are spaced by this many
# times the last rebuild's duration, so rebuilding takes at most a third of the
# loop when changes pour in, and a small catalog still swaps at once.
SWAP_SPACING = 2.0


class Publisher:
    """Holds the current snapshot and swaps in a rebuilt one when something changed."""

    def __init__(self, build: Callable[[], Snapshot], clock: Clock) -> None:
        self._build = build
        self._clock = clock
        self._listeners: list[Callable[[], None]] = []
        self._released: list[asyncio.Future[None]] = []
        self._dirty = False
        self._scheduled = False
        self._next_swap_at = 0.0
        self.swaps = 0
        self.snapshot = build()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def changed(self) -> None:
        """Something in the view changed: swap once this loop iteration is done."""
        self._dirty = True
        self._schedule()

    def release_after_swap(self, waiters: Iterable[asyncio.Future[None]]) -> None:
        """These first queries go on after the next swap (which holds their data)."""
        self._released.extend(waiters)
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet: the next change schedules
            return
        self._scheduled = True
        delay = self._next_swap_at - self._clock.now()
        if delay > 0:
            self._clock.call_later(delay, self._scheduled_flush)
        else:
            loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Swaps now if anything changed, then releases the waiting first queries."""
        if self._dirty:
            self._dirty = False
            started = self._clock.now()
            self.snapshot = self._build()
            finished = self._clock.now()
            self._next_swap_at = finished + SWAP_SPACING * (finished - started)
            self.swaps += 1
            for callback in self._listeners:
                try:
                    callback()
                except Exception:  # one broken listener must not stop the others
                    log.exception("catalog change callback failed")
        released, self._released = self._released, []
        for waiter in released:
            if not waiter.done():
                waiter.set_result(None)
