"""The SIGHUP reloader without sockets: a fake resolver, real files, a real event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import dns.name
import pytest

from gateway import app
from gateway.catalog.source import StaticSource
from gateway.options import Config
from gateway.zones import zone as zones

ZONE = "$ORIGIN lab.test.\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"


class FakeResolver:
    def __init__(self) -> None:
        self.zone_sets: list[dict[dns.name.Name, zones.Zone]] = []

    def replace_zones(self, zone_set: dict[dns.name.Name, zones.Zone]) -> None:
        self.zone_sets.append(zone_set)


def setup(tmp_path: Path) -> tuple[Config, FakeResolver, StaticSource]:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "lab.test.zone").write_text(ZONE)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.json").write_text(json.dumps({"service": {"name": "old"}}))
    config = Config(upstream=(), zones=tmp_path / "zones", catalog=tmp_path / "cat")
    return config, FakeResolver(), StaticSource(app.read_catalog(config))


async def reload(reloader: app.Reloader, requests: int, settle: int = 200) -> None:
    for _ in range(requests):
        reloader.request()
    for _ in range(settle):  # until the thread is done and its result swapped in
        await asyncio.sleep(0.01)
        if not reloader._job.busy:
            break


def test_files_are_read_off_the_event_loop_and_swapped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, resolver, source = setup(tmp_path)
    readers: list[threading.Thread] = []
    read_files = app.read_files

    def recording(config: Config, with_catalog: bool) -> app.Files:
        readers.append(threading.current_thread())
        return read_files(config, with_catalog)

    monkeypatch.setattr(app, "read_files", recording)
    (tmp_path / "cat" / "a.json").write_text(json.dumps({"service": {"name": "new"}}))
    reloader = app.Reloader(config, resolver, source)  # type: ignore[arg-type]
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert readers and threading.main_thread() not in readers
    assert len(resolver.zone_sets) == 1
    assert ("dc1", "new") in source.snapshot().services


def test_a_sighup_during_a_reload_queues_exactly_one_more(tmp_path: Path) -> None:
    config, resolver, source = setup(tmp_path)
    reloader = app.Reloader(config, resolver, source)  # type: ignore[arg-type]

    async def burst() -> None:
        for _ in range(5):  # all while the first reload is still reading
            reloader.request()
        for _ in range(300):
            await asyncio.sleep(0.01)

    asyncio.run(burst())
    reloader.close()
    assert len(resolver.zone_sets) == 2  # the first request and one queued after it


def test_a_bad_file_keeps_what_is_served(tmp_path: Path) -> None:
    config, resolver, source = setup(tmp_path)
    before = source.snapshot()
    (tmp_path / "cat" / "a.json").write_text("[" * 100_000)
    reloader = app.Reloader(config, resolver, source)  # type: ignore[arg-type]
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert resolver.zone_sets == [] and source.snapshot() is before
