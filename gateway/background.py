"""A blocking job (reading and parsing files) run in a thread, one run at a time.

Used for everything re-read while the gateway answers: zone and catalog files
on SIGHUP (``app.Reloader``) and the hosts files (``gateway.hosts.watch``);
``file_signature`` is what the pollers of changed files (hosts files, the resolv
file) compare.
The event loop goes on answering while the thread reads; the result is
handed over on the loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# What tells one version of a file from another: (inode, size, mtime in ns);
# None while it cannot be stat()-ed. A rename over it changes the inode.
FileSignature = tuple[int, int, int] | None


def file_signature(path: Path) -> FileSignature:
    """One ``stat``: cheap enough to poll every second for the files re-read on change."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class SerialJob(Generic[T]):
    """Runs ``job`` in its own thread; ``done`` gets each run's future on the loop.

    A request while a run is under way asks for exactly one more run after
    it, since what the run reads may have changed after it read it. After
    ``close()`` nothing runs and a run under way is dropped.
    """

    def __init__(
        self,
        job: Callable[[], T],
        done: Callable[[asyncio.Future[T]], None],
        name: str,
        *,
        starting: Callable[[], None] | None = None,
    ) -> None:
        """``starting``: called on the loop as each run starts, a queued one too
        (the SIGHUP reloader logs it and tells systemd RELOADING=1)."""
        self._job = job
        self._done = done
        self._starting = starting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._busy = False
        self._again = False
        self._closed = False

    @property
    def busy(self) -> bool:
        """A run is under way (its result not yet handed over)."""
        return self._busy

    def request(self) -> bool:
        """Starts a run (True), or queues one after the run under way (False)."""
        if self._closed:
            return False
        if self._busy:
            self._again = True
            return False
        self._busy = True
        if self._starting is not None:
            self._starting()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._job)
        future.add_done_callback(self._finish)
        return True

    def _finish(self, future: asyncio.Future[T]) -> None:
        self._busy = False
        if self._closed or future.cancelled():
            return
        self._done(future)
        if self._again:
            self._again = False
            self.request()

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
