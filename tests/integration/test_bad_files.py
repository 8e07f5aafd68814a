"""Bad files and reloads (issue 9), against the gateway as a subprocess.

Every bad file is refused at start with exit code 2 and one line naming the file and the
problem, never a traceback; on SIGHUP the same files leave the served data as it was; and
a reload reads its files in a thread, so answers go on while a big zone is parsed.

An unreadable folder needs a process that cannot read it: we run as root, which reads
anything, so those gateways run under ``setpriv`` without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (as a non-root user, chmod alone does it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.rcode
import pytest

from harness.gateway import REPO_ROOT, GatewayProcess
from tests.support.dnsclient import query

# A gateway refusing its files exits well within this; one still running accepted them.
REFUSE_TIMEOUT_S = 20.0
# How long a reload may take before the test gives up on it (the big zone takes seconds).
RELOAD_TIMEOUT_S = 60.0
# Records in the zone whose reload must not pause answers: ~2-3 s to parse here.
BIG_ZONE_RECORDS = 20_000
# Answers that must arrive between "reloading files" and "reloaded" in the log.
ANSWERS_DURING_RELOAD = 20
NO_UPSTREAM = "127.0.0.1:9"


def without_root_reads() -> list[str]:
    """A command prefix that takes away root's power to read unreadable files."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def refused(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The gateway run with ``args``, which it must refuse before serving anything."""
    command = [*(prefix or []), sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0",
               "--upstream", NO_UPSTREAM, *args]  # fmt: skip
    try:
        return subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=REFUSE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway started and served with {args}: the bad file was accepted")


def assert_refused(proc: subprocess.CompletedProcess[str], path: Path, problem: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and problem in proc.stderr, proc.stderr


def write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ({"service": {"name": "x", "weights": [1]}}, "key 'weights' must be an object"),
        ({"service": {"name": "x", "checks": 3}}, "key 'checks' must be a list"),
        (b'{"service": {"name": "\xff"}}', "not UTF-8"),
        # Loaded before issue 9, then every query touching them logged a traceback.
        ({"node_name": "n\u00f6de", "service": {"name": "x"}}, "'node_name' must be ASCII"),
        ({"node_name": "n" * 70, "service": {"name": "x"}}, "'node_name' is longer than"),
        ({"datacenter": "", "service": {"name": "x"}}, "'datacenter' must not be empty"),
        ({"service": {"name": "x", "address": "a..b"}}, "'address' does not make a DNS name"),
    ],
)
def test_a_bad_catalog_file_is_refused_at_start(
    tmp_path: Path, content: object, problem: str
) -> None:
    bad = write(tmp_path / "cat" / "svc.json", content)
    assert_refused(refused("--catalog", str(bad.parent)), bad, problem)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'log_level = "\xff"\n', "not valid TOML: not UTF-8"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML: nested too deeply"),
    ],
    ids=["not-utf8", "deep"],
)
def test_a_bad_toml_file_is_refused_at_start(tmp_path: Path, content: bytes, problem: str) -> None:
    bad = write(tmp_path / "gateway.toml", content)
    assert_refused(refused("--config", str(bad)), bad, problem)


ZONE_HEAD = "$ORIGIN lab.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"


def test_include_in_a_zone_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    part = write(tmp_path / "part.txt", "included A 192.0.2.66\n")
    zone = write(tmp_path / "zones" / "lab.test.zone", ZONE_HEAD + f"$INCLUDE {part}\n")
    assert_refused(refused("--zones", str(zone.parent)), zone, "$INCLUDE")
    args = ("--zones", str(zone.parent), "--zone-include", "--upstream", NO_UPSTREAM)
    with GatewayProcess(*args, probe_name="consul.") as gw:
        reply = query(gw.host, gw.port, "included.lab.test", "A")
        assert {rr.address for rr in reply.answer[0]} == {"192.0.2.66"}


@pytest.mark.parametrize("option", ["--zones", "--catalog"])
def test_an_unreadable_folder_is_refused_at_start(tmp_path: Path, option: str) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    kind = "zones" if option == "--zones" else "catalog"
    proc = refused(option, str(folder), prefix=without_root_reads())
    assert_refused(proc, folder, f"cannot read the {kind} folder: Permission denied")


def wait_for_log(gw: GatewayProcess, marker: str, count: int = 1) -> None:
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while gw.log_text().count(marker) < count:
        assert time.monotonic() < deadline, f"no {marker!r} in the log:\n{gw.log_tail()}"
        time.sleep(0.05)


def sighup(gw: GatewayProcess) -> None:
    assert gw.pid is not None
    os.kill(gw.pid, signal.SIGHUP)


def catalog(folder: Path, name: str) -> Path:
    write(folder / "svc.json", {"node_name": "n1", "advertise_addr": "192.0.2.1",
                                "service": {"name": name, "port": 1}})  # fmt: skip
    return folder


def test_sighup_with_an_unreadable_catalog_folder_keeps_the_catalog(tmp_path: Path) -> None:
    """Before issue 9 the folder read as empty, and every service went NXDOMAIN."""
    folder = catalog(tmp_path / "cat", "old")
    launcher = [*without_root_reads(), sys.executable, "-m", "gateway"]
    args = ("--catalog", str(folder), "--upstream", NO_UPSTREAM)
    with GatewayProcess(*args, probe_name="consul.", launcher=launcher) as gw:
        assert query(gw.host, gw.port, "old.service.consul", "A").answer
        folder.chmod(0)
        try:
            sighup(gw)
            wait_for_log(gw, "reload failed")
        finally:
            folder.chmod(0o755)
        assert f"{folder}: cannot read the catalog folder" in gw.log_text()
        assert query(gw.host, gw.port, "old.service.consul", "A").answer
        assert "reloaded" not in gw.log_text()


@pytest.mark.parametrize(
    ("where", "content"),
    [
        ("cat/svc.json", b"[" * 100_000 + b"]" * 100_000),
        ("cat/svc.json", {"node_name": "n" * 70, "service": {"name": "x"}}),
        # A well-formed include: before issue 9 it was read and served.
        ("zones/lab.test.zone", ZONE_HEAD + "$INCLUDE {tmp}/part.txt\n"),
    ],
    ids=["deep-json", "label-70", "include"],
)
def test_sighup_with_a_bad_file_keeps_the_old_data(
    tmp_path: Path, where: str, content: object
) -> None:
    zone = write(tmp_path / "zones" / "lab.test.zone", ZONE_HEAD + "www A 192.0.2.80\n")
    folder = catalog(tmp_path / "cat", "old")
    args = ("--catalog", str(folder), "--zones", str(zone.parent), "--upstream", NO_UPSTREAM)
    with GatewayProcess(*args, probe_name="consul.") as gw:
        assert query(gw.host, gw.port, "old.service.consul", "A").answer
        write(tmp_path / "part.txt", "www A 192.0.2.99\n")
        if isinstance(content, str):
            content = content.replace("{tmp}", str(tmp_path))
        bad = write(tmp_path / where, content)
        sighup(gw)
        wait_for_log(gw, "reload failed")
        log = gw.log_text()
        assert str(bad) in log and "Traceback" not in log, log
        assert query(gw.host, gw.port, "old.service.consul", "A").answer
        www = query(gw.host, gw.port, "www.lab.test", "A").answer
        assert {rr.address for rr in www[0]} == {"192.0.2.80"}


def big_zone(folder: Path, records: int) -> Path:
    lines = [ZONE_HEAD.replace("lab.test.", "big.test.")]
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(records)]
    return write(folder / "big.test.zone", "".join(lines))


def test_answers_go_on_while_a_big_zone_reloads(tmp_path: Path) -> None:
    """Before issue 9 a SIGHUP parsed the zone on the event loop: every answer waited."""
    zone = big_zone(tmp_path / "zones", BIG_ZONE_RECORDS)
    folder = catalog(tmp_path / "cat", "web")
    args = ("--catalog", str(folder), "--zones", str(zone.parent), "--upstream", NO_UPSTREAM)
    with GatewayProcess(*args, probe_name="consul.") as gw:
        questions: list[tuple[str, Callable[[object], bool]]] = [
            ("web.service.consul", lambda reply: bool(getattr(reply, "answer", None))),
            ("h7.big.test", lambda reply: bool(getattr(reply, "answer", None))),
        ]
        sighup(gw)
        answered_during = lost = asked = 0
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while "reloaded" not in gw.log_text():
            assert time.monotonic() < deadline, gw.log_tail()
            name, good = questions[asked % len(questions)]
            asked += 1
            try:
                reply = query(gw.host, gw.port, name, "A", timeout=5.0)
            except dns.exception.Timeout:
                lost += 1
                continue
            assert reply.rcode() == dns.rcode.NOERROR and good(reply), reply
            log = gw.log_text()
            # Answered after the reload began and before it was done.
            if "reloading files" in log and "reloaded" not in log:
                answered_during += 1
        print(f"{asked} asked, {answered_during} answered while the zone reloaded, {lost} lost")
        assert lost == 0
        assert answered_during >= ANSWERS_DURING_RELOAD, gw.log_tail()
        assert query(gw.host, gw.port, "h19999.big.test", "A").answer
