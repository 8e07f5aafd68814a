"""Reading the hosts files and noticing changes (temporary files, no sockets)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from gateway.dns import wire
from gateway.hosts import watch
from gateway.hosts.table import HostsTable
from gateway.options import Config

WAIT_S = 10.0  # generous: only a bug makes a change go unnoticed


def test_paths_follow_the_options(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    assert watch.paths(Config()) == (Path("/etc/hosts"),)
    assert watch.paths(Config(hosts=False, addn_hosts=(extra,))) == (extra,)
    both = Config(hosts_file=extra, addn_hosts=(extra, tmp_path / "b"))
    assert watch.paths(both) == (extra, tmp_path / "b")


def test_signature_sees_rewrites_renames_and_new_files(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    missing = watch.signature([path])
    assert missing == (None,)
    path.write_text("192.0.2.1 a\n")
    first = watch.signature([path])
    assert first != missing
    path.write_text("192.0.2.1 b\n")  # same size, maybe the same mtime: the inode stays
    os.utime(path, ns=(1, 1))
    assert watch.signature([path]) != first
    other = tmp_path / "new"
    other.write_text("192.0.2.1 c\n")
    before = watch.signature([path])
    other.replace(path)  # a rename over the file, as editors and sed -i do
    assert watch.signature([path]) != before


def test_bad_lines_are_logged_the_rest_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"192.0.2.1 good\nnonsense here\n192.0.2.2 \xff\xfe bad\n")
    with caplog.at_level(logging.WARNING):
        table = watch.read([path, tmp_path / "missing"], ttl=0)
    assert table.claims(wire.to_wire("good.")) and table.claims(wire.to_wire("bad."))
    assert f"bad address at {path} line 2" in caplog.text
    assert f"bad name at {path} line 3" in caplog.text
    assert f"failed to load names from {tmp_path / 'missing'}" in caplog.text


def test_a_changed_file_is_read_again_and_sighup_reads_anyway(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("192.0.2.1 before\n")

    async def main() -> None:
        tables: asyncio.Queue[HostsTable] = asyncio.Queue()
        w = watch.HostsWatch([path], 0, tables.put_nowait, interval=0.01)
        assert w.initial().claims(wire.to_wire("before."))
        w.start()
        path.write_text("192.0.2.1 after-change\n")
        table = await asyncio.wait_for(tables.get(), WAIT_S)
        assert table.claims(wire.to_wire("after-change."))
        assert not table.claims(wire.to_wire("before."))
        w.reload()  # SIGHUP: read even though nothing changed
        table = await asyncio.wait_for(tables.get(), WAIT_S)
        assert table.claims(wire.to_wire("after-change."))
        w.close()

    asyncio.run(main())
