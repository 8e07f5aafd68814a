"""The edge that reads the hosts files and notices when they change.

``--hosts-file`` (with ``--hosts``) and every ``--addn-hosts`` file are read
at start, on SIGHUP, and whenever one of them changes. A change is noticed
by polling: once every ``POLL_INTERVAL_S`` each file is ``stat()``-ed and
its (inode, size, modification time in ns) compared with what was read --
a few microseconds a second, and it catches a rewrite in place, a rename
over the file (editors, ``sed -i``, container runtimes bind-mounting a new
``/etc/hosts``) and a file that appears or disappears. dnsmasq checks its
resolv files the same way (at most once a second, on a query); inotify
would miss a file that does not exist yet and needs a descriptor per folder.

Reading and parsing run in a thread, so a 100,000-line blocklist does not
stall answers; the new table is handed over on the event loop. A missing or
unreadable file is a warning and serves no names (dnsmasq: "failed to load
names from ..."), picked up as soon as it appears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.background import FileSignature, SerialJob, file_signature
from gateway.hosts.parse import HostsLine, parse
from gateway.hosts.table import HostsTable
from gateway.options import Config

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
# Per file: (inode, size, mtime in ns), or None while it cannot be stat()-ed.
Signature = tuple[FileSignature, ...]


def paths(config: Config) -> tuple[Path, ...]:
    """The hosts files the options name, in reading order (the system file first)."""
    system = (config.hosts_file,) if config.hosts else ()
    return tuple(dict.fromkeys((*system, *config.addn_hosts)))


def same_files(old: Config, new: Config) -> bool:
    """Whether ``new`` reads the same hosts files into the same table as ``old`` (a
    reload keeps the running watch then; otherwise it builds one for ``new``)."""
    return paths(old) == paths(new) and old.local_ttl == new.local_ttl


def signature(files: Sequence[Path]) -> Signature:
    """What the files look like now, cheaply (one ``stat`` each)."""
    return tuple(file_signature(path) for path in files)


def read(files: Sequence[Path], ttl: int) -> HostsTable:
    """Reads and parses every file; bad lines and missing files are logged, never raised."""
    lines: list[HostsLine] = []
    for path in files:
        try:
            # Bytes that are not UTF-8 become U+FFFD, which makes a bad name, not a crash.
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("failed to load names from %s: %s", path, exc.strerror or exc)
            continue
        found, warnings = parse(text, str(path))
        for warning in warnings:
            log.warning("%s", warning)
        lines.extend(found)
        log.info("read %s - %d names", path, sum(len(line.names) for line in found))
    return HostsTable(lines, ttl)


@dataclass(frozen=True)
class Reading:
    """The hosts files read once: what they looked like before the read, and their table."""

    seen: Signature
    table: HostsTable


def read_all(files: Sequence[Path], ttl: int) -> Reading:
    """Reads the files (blocking); a change during the read is seen on the next poll."""
    seen = signature(files)
    return Reading(seen, read(files, ttl))


class HostsWatch:
    """Keeps the resolver's hosts table in step with the files.

    ``on_table`` receives every new table on the event loop. ``reload()``
    (SIGHUP) reads now, changed or not; a reload asked for while one runs
    runs once more after it.
    """

    def __init__(
        self,
        files: Sequence[Path],
        ttl: int,
        on_table: Callable[[HostsTable], None],
        *,
        interval: float = POLL_INTERVAL_S,
        seen: Signature | None = None,
    ) -> None:
        """``seen``: the files as already read elsewhere (a reload's thread), else
        ``initial()`` reads them."""
        self._files = tuple(files)
        self._ttl = ttl
        self._on_table = on_table
        self._interval = interval
        self._seen: Signature | None = seen
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._job = SerialJob(self._read, self._finish, "hosts")

    def start(self) -> None:
        """Starts polling (the first table was read at start-up, see ``initial``)."""
        if self._files:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._poll)

    def initial(self) -> HostsTable:
        """Reads the files now, blocking: the table the gateway starts with."""
        reading = read_all(self._files, self._ttl)
        self._seen = reading.seen
        return reading.table

    def _poll(self) -> None:
        self._timer = None
        if self._closed:
            return
        if signature(self._files) != self._seen:
            self.reload()
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._poll)

    def reload(self) -> None:
        self._job.request()

    def _read(self) -> Reading:
        return read_all(self._files, self._ttl)

    def _finish(self, future: asyncio.Future[Reading]) -> None:
        try:
            reading = future.result()
            self._seen = reading.seen
            self._on_table(reading.table)
        except Exception:  # a bug: keep serving the table we have
            log.exception("reading the hosts files failed; the previous names stay")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._job.close()
