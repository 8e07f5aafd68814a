"""Whether the local Consul answers, and how old the view may get while it does not.

Every request to the local agent reports here (:mod:`gateway.consul.reader`):
an answer marks Consul up, a transport failure or a 5xx marks it down.
While it is down the last good view keeps answering for
``consul_view_max_age`` seconds, then the catalog answers SERVFAIL until
Consul is back. The two transitions also end waits: Consul coming back wakes
the watchers sleeping in backoff, Consul going away wakes the datacenter
probe so that it polls every second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.catalog.source import CatalogUnavailable
from gateway.consul.clock import Alarm, Clock, Timer

log = logging.getLogger(__name__)

# The view-age timer fires this much after the maximum age, so that the age
# it finds is past the limit (usable() allows an age equal to it).
EXPIRY_SLACK_S = 0.01


class Liveness:
    """Up or down, since when, and whether the view is still usable."""

    def __init__(
        self,
        clock: Clock,
        *,
        address: str,
        view_max_age_s: float,
        ready: Callable[[], bool],
        on_back: Callable[[], None],
        on_expired: Callable[[], None],
    ) -> None:
        """``ready`` says whether a first complete view exists (the local lists
        are in); ``on_back`` runs when Consul answers again after an outage,
        ``on_expired`` when the view gets older than ``view_max_age_s``."""
        self._clock = clock
        self._address = address
        self._max_age_s = view_max_age_s
        self._ready = ready
        self._on_back = on_back
        self._on_expired = on_expired
        self._started_at = clock.now()
        self._down_since: float | None = None
        self._age_timer: Timer | None = None
        self._back = Alarm(clock)
        self._gone = Alarm(clock)

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def reachable(self) -> bool:
        return self._ready() and self._down_since is None

    def view_age(self) -> float:
        """Seconds since the view was last known current (0 while Consul answers)."""
        if not self._ready():
            return self._clock.now() - self._started_at
        if self._down_since is None:
            return 0.0
        return self._clock.now() - self._down_since

    def usable(self) -> bool:
        if not self._ready():
            return False
        if self._down_since is None:
            return True
        return self._clock.now() - self._down_since <= self._max_age_s

    def require_usable(self) -> None:
        """Raises CatalogUnavailable when the view cannot answer (SERVFAIL)."""
        if self.usable():
            return
        if not self._ready():
            raise CatalogUnavailable(f"Consul at {self._address} not reached yet")
        raise CatalogUnavailable(f"Consul view older than {self._max_age_s:g}s")

    def mark_up(self) -> None:
        if self._down_since is None:
            return
        log.info("Consul at %s reachable again after %.1fs", self._address, self.view_age())
        self._down_since = None
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        # Watchers sleeping in backoff retry now, so the view is current again
        # within a round trip rather than within the longest backoff.
        self._back.ring()
        self._on_back()

    def mark_down(self, reason: str) -> None:
        if self._down_since is not None:
            return
        self._down_since = self._clock.now()
        self._gone.ring()  # the probe retries every second until Consul is back
        if not self._ready():
            log.warning("Consul at %s not reachable (%s); retrying", self._address, reason)
            return
        log.warning(
            "Consul at %s not reachable (%s): answering from the last good view for up to %gs",
            self._address,
            reason,
            self._max_age_s,
        )
        self._age_timer = self._clock.call_later(
            self._max_age_s + EXPIRY_SLACK_S, self._view_expired
        )

    def _view_expired(self) -> None:
        self._age_timer = None
        if self._down_since is not None:
            log.error(
                "Consul away for %.1fs, longer than consul_view_max_age: catalog answers SERVFAIL",
                self.view_age(),
            )
            self._on_expired()

    async def nap(self, delay_s: float) -> None:
        """Sleeps ``delay_s``, or less if Consul comes back meanwhile."""
        await self._back.sleep(delay_s)

    async def wait_for_outage(self, delay_s: float) -> None:
        """Sleeps ``delay_s``, or less if Consul goes away meanwhile."""
        await self._gone.sleep(delay_s)

    def stop(self) -> None:
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
