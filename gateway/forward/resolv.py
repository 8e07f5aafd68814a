"""The resolv file as a live source of the standard upstreams (dnsmasq polls it too).

The edge: every :data:`POLL_INTERVAL_S` the file's identity (inode, size,
modification time) is compared with the last one seen; when it changed, the
nameservers are read again (``options.system_upstreams``: the gateway's own
listen addresses skipped, so it never forwards to itself) and, with the
``--server IP`` upstreams after them, handed to ``apply``. A file that is
gone or lists no usable nameserver keeps the upstreams as they were, as
dnsmasq does while a network manager rewrites the file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.background import file_signature
from gateway.options import Endpoint, system_upstreams

log = logging.getLogger(__name__)

# How often the file is looked at: a stat() per second costs nothing, and a
# changed network is noticed within about a second (dnsmasq: at most once a
# second, when a query arrives).
POLL_INTERVAL_S = 1.0


def standard_upstreams(
    found: tuple[Endpoint, ...], extra: tuple[Endpoint, ...]
) -> tuple[Endpoint, ...]:
    """The resolv file's nameservers, then the ``--server IP`` ones, without repeats."""
    return tuple(dict.fromkeys((*found, *extra)))


class ResolvWatcher:
    """Re-reads the resolv file when it changes and applies the new upstream list."""

    def __init__(
        self,
        path: Path,
        listen: tuple[Endpoint, ...],
        extra: tuple[Endpoint, ...],
        apply: Callable[[tuple[Endpoint, ...]], None],
        *,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        self._path = path
        self._listen = listen
        self._extra = extra
        self._apply = apply
        self._interval = interval
        self._seen = file_signature(path)
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # times a changed file gave a new list (a metric)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:  # a bug must not end the polling
                log.exception("reading %s failed", self._path)

    def check(self) -> None:
        """One look at the file: re-read and apply it when it changed."""
        now = file_signature(self._path)
        if now == self._seen:
            return
        self._seen = now
        found = system_upstreams(self._listen, self._path) if now is not None else ()
        if not found:
            log.warning("%s lists no usable nameserver: keeping the upstreams", self._path)
            return
        upstreams = standard_upstreams(found, self._extra)
        self.reloads += 1
        log.info("%s changed: upstreams %s", self._path, ", ".join(str(u) for u in upstreams))
        self._apply(upstreams)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
