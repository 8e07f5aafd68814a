"""The SIGHUP reloader without sockets: real files, a real event loop, a recording swap."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from gateway import app
from gateway.options import Config
from gateway.service.reload import ConfigSources
from gateway.service.systemd import Notifier

ZONE = "$ORIGIN lab.test.\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"


class Swaps:
    """The reloader's ``apply``: records what it would swap in."""

    def __init__(self) -> None:
        self.applied: list[tuple[Config, app.Files]] = []

    def __call__(self, config: Config, files: app.Files) -> None:
        self.applied.append((config, files))


def setup(tmp_path: Path, toml: str = "") -> tuple[Config, ConfigSources]:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "lab.test.zone").write_text(ZONE)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.json").write_text(json.dumps({"service": {"name": "old"}}))
    conf = tmp_path / "gw.toml"
    conf.write_text(toml)
    cli = {"upstream": [], "zones": str(tmp_path / "zones"), "catalog": str(tmp_path / "cat")}
    sources = ConfigSources(cli, conf)
    return sources.load(), sources


def reloader_for(config: Config, sources: ConfigSources, swaps: Swaps) -> app.Reloader:
    return app.Reloader(sources.load, config, swaps, Notifier(None))


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
    config, sources = setup(tmp_path)
    readers: list[threading.Thread] = []
    read_files = app.read_files

    def recording(config: Config, with_catalog: bool) -> app.Files:
        readers.append(threading.current_thread())
        return read_files(config, with_catalog)

    monkeypatch.setattr(app, "read_files", recording)
    (tmp_path / "cat" / "a.json").write_text(json.dumps({"service": {"name": "new"}}))
    swaps = Swaps()
    reloader = reloader_for(config, sources, swaps)
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert readers and threading.main_thread() not in readers
    assert len(swaps.applied) == 1
    catalog = swaps.applied[0][1].catalog
    assert catalog is not None and ("dc1", "new") in catalog.services


def test_a_sighup_during_a_reload_queues_exactly_one_more(tmp_path: Path) -> None:
    config, sources = setup(tmp_path)
    swaps = Swaps()
    reloader = reloader_for(config, sources, swaps)

    async def burst() -> None:
        for _ in range(5):  # all while the first reload is still reading
            reloader.request()
        for _ in range(300):
            await asyncio.sleep(0.01)

    asyncio.run(burst())
    reloader.close()
    assert len(swaps.applied) == 2  # the first request and one queued after it


def test_a_bad_file_keeps_what_is_served(tmp_path: Path) -> None:
    config, sources = setup(tmp_path)
    (tmp_path / "cat" / "a.json").write_text("[" * 100_000)
    swaps = Swaps()
    reloader = reloader_for(config, sources, swaps)
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert swaps.applied == []


def test_the_config_file_is_read_again_and_restart_only_options_keep_their_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, sources = setup(tmp_path, "cache_size = 10\n")
    assert config.cache_size == 10
    assert sources.config_file is not None
    sources.config_file.write_text("cache_size = 20\nworkers = 3\n")
    swaps = Swaps()
    reloader = reloader_for(config, sources, swaps)
    asyncio.run(reload(reloader, 1))
    [(new, _)] = swaps.applied
    assert new.cache_size == 20 and new.workers == config.workers
    assert "'workers' needs a restart" in caplog.text
    # The next reload compares with what is served now, not with the start.
    sources.config_file.write_text("cache_size = -5\n")
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert len(swaps.applied) == 1
    assert f"{sources.config_file}:1: option 'cache_size'" in caplog.text


def test_a_swap_that_fails_keeps_the_reloader_on_the_old_configuration(tmp_path: Path) -> None:
    config, sources = setup(tmp_path, "cache_size = 10\n")
    calls: list[Config] = []

    def refuse(new: Config, files: app.Files) -> None:
        calls.append(new)
        raise ValueError("zone lab.test clashes")

    reloader = app.Reloader(sources.load, config, refuse, Notifier(None))
    asyncio.run(reload(reloader, 1))
    asyncio.run(reload(reloader, 1))
    reloader.close()
    assert len(calls) == 2 and reloader._config is config
