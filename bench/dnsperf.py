"""Running dnsperf (2.10) and reading its report.

dnsperf prints the mean latency but no percentiles; with ``-v`` it prints one line per
answer (``> NOERROR name type 0.000139``), which is where p50/p99 come from (a separate,
rate-limited pass, so the printing does not eat into the peak figure).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.process import find_binary


class DnsperfError(RuntimeError):
    pass


@dataclass
class DnsperfResult:
    command: list[str]
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    runtime: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    samples: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def rcode_share(self, rcode: str) -> float:
        total = sum(self.rcodes.values())
        return self.rcodes.get(rcode, 0) / total if total else 0.0


_INT_FIELDS = {
    "Queries sent": "sent",
    "Queries completed": "completed",
    "Queries lost": "lost",
}
_RCODE = re.compile(r"([A-Z][A-Z0-9]*) (\d+) \(")


def parse_report(text: str, result: DnsperfResult) -> None:
    """Fill ``result`` from dnsperf's "Statistics:" block."""
    seen = False
    for raw in text.splitlines():
        line = raw.strip()
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        if key in _INT_FIELDS:
            setattr(result, _INT_FIELDS[key], int(value.split()[0]))
            seen = True
        elif key == "Queries per second":
            result.qps = float(value)
        elif key == "Run time (s)":
            result.runtime = float(value)
        elif key == "Average Latency (s)":
            result.mean_ms = float(value.split()[0]) * 1000
            m = re.search(r"max ([0-9.]+)", value)
            if m:
                result.max_ms = float(m.group(1)) * 1000
        elif key == "Response codes":
            result.rcodes = {name: int(n) for name, n in _RCODE.findall(value)}
        elif key.startswith("[Warning]") or key.startswith("Warning"):
            result.warnings.append(line)
    if not seen:
        raise DnsperfError("no statistics in dnsperf output:\n" + text[-2000:])


def percentile(sorted_values: array[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def run(
    host: str,
    port: int,
    datafile: Path,
    *,
    duration: float,
    clients: int = 4,
    threads: int | None = None,
    max_qps: float | None = None,
    tcp: bool = False,
    max_runs: int | None = None,
    timeout: float = 5.0,
    verbose: bool = False,
    outstanding: int | None = None,
) -> DnsperfResult:
    """One dnsperf run; with ``verbose`` the per-answer latencies give p50/p99.

    Bounded: dnsperf stops after ``duration`` seconds (``-l``) and then waits at most
    ``timeout`` for answers; the process is killed if it overstays that by 30 s.
    """
    cmd = [
        find_binary("dnsperf"),
        "-s",
        host,
        "-p",
        str(port),
        "-d",
        str(datafile),
        "-c",
        str(clients),
        "-l",
        f"{duration:g}",
        "-t",
        f"{timeout:g}",
    ]
    if threads:
        cmd += ["-T", str(threads)]
    if max_qps:
        cmd += ["-Q", str(max(1, int(max_qps)))]
    if tcp:
        cmd += ["-m", "tcp"]
    if max_runs:
        cmd += ["-n", str(max_runs)]
    if outstanding:
        cmd += ["-q", str(outstanding)]
    if verbose:
        cmd.append("-v")
    result = DnsperfResult(command=cmd)
    limit = duration + timeout + 30
    if not verbose:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DnsperfError(f"dnsperf did not finish within {limit:.0f}s") from exc
        if done.returncode != 0:
            raise DnsperfError(
                f"dnsperf exited {done.returncode}: {done.stderr[-1500:]}{done.stdout[-1500:]}"
            )
        parse_report(done.stdout, result)
        return result

    # Per-answer lines go to a file and are read afterwards: parsing them live would take
    # CPU from the server under test on a small machine.
    with tempfile.TemporaryFile("w+") as out:
        try:
            code = subprocess.run(
                cmd, stdout=out, stderr=subprocess.DEVNULL, timeout=limit, check=False
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise DnsperfError(f"dnsperf did not finish within {limit:.0f}s") from exc
        out.seek(0)
        latencies: array[float] = array("d")
        rest: list[str] = []
        for line in out:
            if line.startswith("> "):
                # "> NOERROR name type 0.000139"
                with contextlib.suppress(ValueError, IndexError):
                    latencies.append(float(line.rsplit(None, 1)[1]))
            else:
                rest.append(line)
    if code != 0:
        raise DnsperfError(f"dnsperf exited {code}: {''.join(rest)[-2000:]}")
    parse_report("".join(rest), result)
    if latencies:
        ordered = array("d", sorted(latencies))
        result.p50_ms = percentile(ordered, 50) * 1000
        result.p99_ms = percentile(ordered, 99) * 1000
        result.samples = len(ordered)
    return result
