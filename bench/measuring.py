"""Measuring: the dnsperf passes per server and workload, memory, the profile, the end state.

For each server and workload: one warm-up pass where the workload says so, a peak pass
(queries/s, mean latency, lost queries), then a rate-limited ``-v`` pass for p50/p99 at
half the server's own peak (or ``--latency-qps``), with peak RSS over the server's
processes. Also what the gateway looked like at the end (metrics, log) and its profile.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.gateway import GatewayProcess, scrape_metrics
from harness.process import process_tree
from harness.zone import ZONE

from . import dnsperf, workloads
from .environment import log
from .servers import Server, label
from .workloads import WORKLOADS, Workload

WARM_QPS = 5000
# Unique names generated per second of a cache-miss run: above what any server here
# forwards on a small machine; a run that exhausts them is flagged.
MISS_NAMES_PER_SECOND = 80_000


# ------------------------------------------------------------------------- memory


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def peak_rss_kb(pids: Sequence[int]) -> int:
    """Sum of VmHWM (peak resident set) over ``pids``."""
    return sum(_status_kb(p, "VmHWM") for p in pids)


def rss_kb(pids: Sequence[int]) -> int:
    return sum(_status_kb(p, "VmRSS") for p in pids)


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``); False if not allowed."""
    ok = True
    for p in pids:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


# ---------------------------------------------------------------------- the log

_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Unavailable|Timeout)\w*: .*$")


def exception_counts(log_text: str) -> dict[str, int]:
    """Final lines of the tracebacks in a log, counted (``module.Error: message``)."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        if _EXC_LINE.match(line):
            counts[line[:200]] = counts.get(line[:200], 0) + 1
    return counts


@dataclass(frozen=True)
class LogSummary:
    """ERROR and WARNING lines of a gateway log, and its exceptions counted."""

    errors: int
    warnings: int
    exceptions: dict[str, int]

    @classmethod
    def of(cls, text: str) -> LogSummary:
        return cls(text.count(" ERROR "), text.count(" WARNING "), exception_counts(text))

    def exceptions_text(self) -> str:
        return "; ".join(f"{n:,}x {e}" for e, n in self.exceptions.items())


# ----------------------------------------------------------------------- passes


@dataclass(frozen=True)
class Passes:
    """The dnsperf parameters, identical for every server."""

    duration: float  # seconds of the peak pass (-l)
    latency_duration: float  # seconds of the p50/p99 pass
    clients: int = 4
    threads: int | None = None
    timeout: float = 5.0
    max_qps: float | None = None  # -Q of the peak pass
    latency_qps: float | None = None  # rate of the p50/p99 pass; None: half the peak


@dataclass
class Cell:
    """One server under one workload: the figures, or why there are none."""

    server: str
    workload: str
    label: str
    qps: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    sent: int = 0
    lost: int = 0
    lost_half: int | None = None
    latency_qps: float | None = None
    peak_rss_kb: int | None = None
    rcodes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def _miss_file(workdir: Path, seconds: float) -> tuple[Path, int]:
    count = int(MISS_NAMES_PER_SECOND * seconds) + 1000
    path = workdir / "w3-run.txt"
    workloads.write(path, workloads.w3_lines(count))
    return path, count


def measure(
    server: Server,
    w: Workload,
    passes: Passes,
    files: dict[str, Path],
    workdir: Path,
    notes: list[str],
) -> Cell:
    """The passes of one workload against one server; anything odd goes to ``notes``."""
    cell = Cell(server.key, w.key, label(server.key, w.key))
    reset_peak_rss(process_tree(server.pid))
    common: dict[str, Any] = {
        "clients": passes.clients,
        "threads": passes.threads,
        "tcp": w.tcp,
        "timeout": passes.timeout,
    }
    datafile = files.get(w.key)
    if w.warm and datafile is not None:
        lines = sum(1 for _ in datafile.open())
        dnsperf.run(
            server.host,
            server.port,
            datafile,
            duration=lines / WARM_QPS + 5,
            max_qps=WARM_QPS,
            max_runs=1,
            **common,
        )
    max_runs = None
    count = 0
    if w.unique:
        datafile, count = _miss_file(workdir, passes.duration)
        max_runs = 1
    assert datafile is not None
    peak = dnsperf.run(
        server.host,
        server.port,
        datafile,
        duration=passes.duration,
        max_qps=passes.max_qps,
        max_runs=max_runs,
        **common,
    )
    if w.unique and peak.sent >= count:
        notes.append(f"{server.key} {w.key}: ran out of unique names ({count:,})")
    cell.qps, cell.mean_ms, cell.sent, cell.lost = peak.qps, peak.mean_ms, peak.sent, peak.lost
    cell.rcodes = dict(peak.rcodes)
    if not server.alive:
        raise RuntimeError(f"{server.key} died during {w.key}")
    rate = passes.latency_qps or max(50.0, peak.qps / 2)
    if w.unique:
        seconds = passes.latency_duration * rate / MISS_NAMES_PER_SECOND + 1
        datafile, count = _miss_file(workdir, seconds)
    lat = dnsperf.run(
        server.host,
        server.port,
        datafile,
        duration=passes.latency_duration,
        max_qps=rate,
        max_runs=max_runs,
        verbose=True,
        **common,
    )
    cell.p50_ms, cell.p99_ms, cell.lost_half = lat.p50_ms, lat.p99_ms, lat.lost
    cell.latency_qps = rate
    cell.peak_rss_kb = peak_rss_kb(process_tree(server.pid))
    cell.raw = {"peak": peak.to_json(), "latency": lat.to_json()}
    if not server.alive:
        raise RuntimeError(f"{server.key} died during {w.key}")
    bad = {k: v for k, v in peak.rcodes.items() if k in ("SERVFAIL", "REFUSED", "FORMERR")}
    if bad:
        share = sum(bad.values()) / max(1, sum(peak.rcodes.values()))
        if share > 0.001:
            notes.append(f"{server.key} {w.key}: {bad} ({100 * share:.1f}% of answers)")
    return cell


def measure_all(
    servers: Sequence[Server],
    workload_keys: Sequence[str],
    passes: Passes,
    files: dict[str, Path],
    workdir: Path,
    *,
    deadline: float,
    notes: list[str],
) -> list[Cell]:
    """Every workload against every server, in turn; no new pass after ``deadline``."""
    cells: list[Cell] = []
    for server in servers:
        for wkey in workload_keys:
            w = WORKLOADS[wkey]
            if time.monotonic() > deadline:
                notes.append(f"--max-minutes reached: {server.key} {wkey} skipped")
                continue
            if not server.alive:
                cells.append(Cell(server.key, wkey, label(server.key, wkey), error="dead"))
                continue
            log(f"{server.key} {wkey}: {w.title}")
            try:
                cell = measure(server, w, passes, files, workdir, notes)
            except Exception as exc:
                log(f"{server.key} {wkey} FAILED: {exc}")
                cell = Cell(server.key, wkey, label(server.key, wkey), error=str(exc))
                if not server.alive:
                    notes.append(f"{server.key} died in {wkey}; log tail in JSON")
            else:
                log(
                    f"  {cell.qps:,.0f} q/s, mean {cell.mean_ms:.2f} ms, p50 "
                    f"{cell.p50_ms or 0:.3f} p99 {cell.p99_ms or 0:.3f} ms at "
                    f"{cell.latency_qps:,.0f} q/s, lost {cell.lost}+{cell.lost_half}, "
                    f"rcodes {cell.rcodes}"
                )
            cells.append(cell)
    return cells


# ---------------------------------------------------------------------- the gateway


@dataclass(frozen=True)
class GatewayEnd:
    """The gateway after every pass: its metrics, whether it still ran, its log."""

    metrics: dict[str, float] | None
    alive: bool
    log: LogSummary


def gateway_end(gw: Server, metrics_addr: str | None, notes: list[str]) -> GatewayEnd:
    metrics = None
    if metrics_addr is not None:
        with contextlib.suppress(Exception):
            metrics = scrape_metrics(metrics_addr, timeout=3.0)
    if not gw.alive:
        notes.append("the gateway was not running at the end")
    summary = LogSummary.of(gw.process.log_text())
    if summary.errors or summary.warnings:
        detail = summary.exceptions_text()
        notes.append(
            f"gateway log: {summary.errors:,} ERROR, {summary.warnings:,} WARNING lines"
            + (f" ({detail})" if detail else "")
        )
    return GatewayEnd(metrics, gw.alive, summary)


@dataclass(frozen=True)
class Profile:
    """Where a profile of the gateway under w1 went, and what the run under it gave."""

    tool: str
    file: Path
    qps: float
    output: str | None = None  # py-spy's own output (its tail)

    def to_json(self) -> dict[str, Any]:
        if self.tool == "py-spy":
            return {
                "tool": self.tool,
                "file": str(self.file),
                "qps_under_profiler": self.qps,
                "output": self.output,
            }
        return {"tool": self.tool, "file": str(self.file), "qps": self.qps}


def profile_gateway(
    gw: Server,
    datafile: Path,
    passes: Passes,
    *,
    tool: str,
    out_stem: Path,
    workdir: Path,
    notes: list[str],
) -> Profile:
    """py-spy attached to the running gateway during a w1 run (pyinstrument if no py-spy).

    ``out_stem`` is the profile's path without its suffix (.svg or .html by tool).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if tool == "py-spy" and not Path(spy).is_file():
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    if tool != "pyinstrument" and Path(spy).is_file():
        out = out_stem.with_suffix(".svg")
        cmd = [
            spy,
            "record",
            "--pid",
            str(gw.pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "250",
            "--duration",
            str(int(passes.duration) + 1),
            "--output",
            str(out),
        ]
        log(f"profiling the gateway with py-spy for w1 -> {out}")
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as spy_proc:
            time.sleep(0.5)
            res = dnsperf.run(
                gw.host, gw.port, datafile, duration=passes.duration, clients=passes.clients
            )
            try:
                spy_out, _ = spy_proc.communicate(timeout=passes.duration + 60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_out, _ = spy_proc.communicate()
        if spy_proc.returncode != 0 or not out.exists():
            notes.append(f"py-spy failed ({spy_proc.returncode}): {spy_out.strip()[-200:]}")
        else:
            notes.append(f"profile (py-spy, w1): {out}")
        return Profile("py-spy", out, res.qps, spy_out[-500:])
    # Fallback: a second gateway started under pyinstrument, stopped with SIGTERM.
    out = out_stem.with_suffix(".html")
    assert isinstance(gw.process, GatewayProcess)
    prof = GatewayProcess(
        *gw.process.args,
        log_path=workdir / "gateway-pyinstrument.log",
        probe_name=ZONE,
        launcher=[sys.executable, "-m", "pyinstrument", "-r", "html", "-o", str(out)],
    )
    # pyinstrument's own "-m gateway" goes before the gateway's flags.
    prof.launcher = (*prof.launcher, "-m", "gateway")
    log(f"profiling a second gateway under pyinstrument for w1 -> {out}")
    try:
        prof.start(timeout=30)
        res = dnsperf.run(prof.host, prof.port, datafile, duration=passes.duration)
    finally:
        # SIGTERM lets pyinstrument write its report; close() also removes its work dir.
        prof.stop(30.0)
        prof.close()
    if out.exists():
        notes.append(f"profile (pyinstrument, w1): {out}")
    else:
        notes.append(f"pyinstrument wrote no profile; see {prof.log_path}")
    return Profile("pyinstrument", out, res.qps)
