"""One blocking-query loop per watched endpoint, and the rules it follows.

A watch reads its path once, then blocks on the index it got, over and
over, until cancelled. Each answer goes to ``on_data`` (unless the wait ran
out with nothing new), "no path to datacenter" to ``on_unknown_dc`` and
anything else to ``on_error``, followed by a backoff nap that Consul coming
back cuts short. :class:`Watcher` starts such loops with what they share:
the reader, the blocking-read slots, the naps and the task set.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.consul.decode import BadResponse, json_body
from gateway.consul.http import ConsulError, HTTPResult, UnknownDatacenter
from gateway.consul.reader import Reader
from gateway.consul.slots import Slots, SlotShared
from gateway.consul.tasks import TaskSet

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 10.0


def next_index(previous: int, received: int) -> int:
    """The index the next blocking query waits on (Consul's documented rules).

    An index that went backwards means the state was reset (snapshot
    restore, a new cluster): start again with a plain read. Never block on
    0, which would return at once and spin.
    """
    if received < previous:
        return 0
    return max(received, 1)


class Backoff:
    """Exponential backoff with jitter: 0.1 s doubling up to 10 s.

    Each delay is drawn from [d/2, d] so that watchers failing together
    (Consul restarting) do not come back in lock step.
    """

    def __init__(
        self,
        initial_s: float = BACKOFF_INITIAL_S,
        maximum_s: float = BACKOFF_MAX_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        return ceiling / 2.0 + self._rng() * ceiling / 2.0

    def reset(self) -> None:
        self._attempt = 0


async def watch(
    read: Callable[[int], Awaitable[HTTPResult]],
    *,
    path: str,
    on_data: Callable[[Any], None],
    on_unknown_dc: Callable[[], None],
    on_error: Callable[[str], None],
    nap: Callable[[float], Awaitable[None]],
    backoff: Backoff,
) -> None:
    """Blocking queries with ``read(index)``, one after the other, until cancelled."""
    index = 0
    while True:
        try:
            result = await read(index)
            # Same index: the wait ran out with nothing new; skip parsing.
            if index == 0 or result.index != index:
                on_data(json_body(result))
            seen = result.index or 0
            # Not kept across the next blocking read: bodies are ~1 KB per
            # instance, and thousands of watches wait at once.
            del result
        except SlotShared:
            continue  # same index, shorter wait
        except UnknownDatacenter:
            on_unknown_dc()
        except (ConsulError, BadResponse) as exc:
            on_error(str(exc))
        except Exception as exc:  # a bug must not freeze this part of the view
            log.exception("watching %s failed", path)
            on_error(f"internal error: {exc!r}")
        else:
            backoff.reset()
            index = next_index(index, seen)
            continue
        # After any failure start over with a plain read: a restarted
        # cluster's index can be lower than ours, and blocking on ours
        # would hold the first fresh answer back for a whole wait.
        index = 0
        await nap(backoff.next())


class Watcher:
    """Starts watch loops on the shared reader, slots and naps."""

    def __init__(
        self,
        reader: Reader,
        slots: Slots,
        tasks: TaskSet,
        *,
        nap: Callable[[float], Awaitable[None]],
        wait_s: float,
        rng: Callable[[], float],
    ) -> None:
        self._reader = reader
        self._slots = slots
        self._tasks = tasks
        self._nap = nap
        self._wait_s = wait_s
        self._rng = rng

    def start(
        self,
        path: str,
        dc: str,
        *,
        on_data: Callable[[Any], None],
        on_unknown_dc: Callable[[], None],
        on_error: Callable[[str], None],
        slotted: bool = False,
        label: str,
    ) -> asyncio.Task[None]:
        """Watches ``path`` in ``dc``; ``slotted`` watches share the blocking-read slots.

        Service watches are slotted; the few per-datacenter list watches are
        not, so they never queue behind service watches. First (non-blocking)
        reads never wait for a slot.
        """

        async def read(index: int) -> HTTPResult:
            if not index:
                return await self._reader.read(path, dc)
            if not slotted:
                return await self._reader.read(path, dc, index=index, wait_s=self._wait_s)
            return await self._slots.read(
                lambda wait_s: self._reader.read(path, dc, index=index, wait_s=wait_s),
                self._wait_s,
            )

        loop = watch(
            read,
            path=path,
            on_data=on_data,
            on_unknown_dc=on_unknown_dc,
            on_error=on_error,
            nap=self._nap,
            backoff=Backoff(rng=self._rng),
        )
        return self._tasks.spawn(loop, label)
