"""Log lines a client can cause, at a bounded rate.

Anything a packet or a connection can trigger (a send error, a bug hit by a
crafted query, running out of file descriptors) logs through
:class:`RateLimitedLog`: at most ``lines`` lines per ``interval`` for each
kind, then silence, and the first line of the next interval says how many
were suppressed. A flood of forged packets then costs a few lines a minute,
not a line (or a traceback) per packet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

# At most this many lines of one kind per interval: enough to see a
# problem and its variety, too few to fill a disk or slow the loop.
LINES_PER_INTERVAL = 10
INTERVAL_S = 60.0
# The counter (``gateway.metrics``) of lines not written.
SUPPRESSED_COUNTER = "log_lines_suppressed"


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """``logger`` behind a per-kind budget of ``lines`` per ``interval`` seconds.

    ``kind`` is a fixed name chosen in the code ("udp_send", "tcp_accept"),
    never client data, so the table of kinds stays small. Suppressed lines
    are counted in ``counts`` (the metrics counters) when given.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        lines: int = LINES_PER_INTERVAL,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        counts: MutableMapping[str, int] | None = None,
    ) -> None:
        self._logger = logger
        self._lines = lines
        self._interval = interval
        self._clock = clock
        self._counts = counts
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def error(
        self, kind: str, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        """An error; ``exc_info`` adds its traceback (for bugs, never for client input)."""
        self.log(logging.ERROR, kind, msg, *args, exc_info=exc_info)

    def log(
        self,
        level: int,
        kind: str,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.start >= self._interval:
            previous = window.suppressed if window is not None else 0
            window = self._windows[kind] = _Window(now)
            if previous:
                msg += " [%d similar lines suppressed before this one]"
                args = (*args, previous)
        if window.written >= self._lines:
            window.suppressed += 1
            if self._counts is not None:
                self._counts[SUPPRESSED_COUNTER] += 1
            return
        window.written += 1
        self._logger.log(level, msg, *args, exc_info=exc_info)

    def suppressed(self, kind: str) -> int:
        """Lines of ``kind`` suppressed in the current interval."""
        window = self._windows.get(kind)
        return window.suppressed if window is not None else 0
