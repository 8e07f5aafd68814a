"""What a benchmark run stands on: the machine, the versions of every binary, the console.

Machine facts and versions go into every result file's header, so figures from different
machines or builds are never compared unknowingly. ``log`` is the progress line every
bench module prints to stderr (stdout carries the result tables).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.process import find_binary

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(msg: str, tag: str = "bench") -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Machine:
    nproc: int
    cpu: str
    kernel: str
    python: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> Machine:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return Machine(
        nproc=len(os.sched_getaffinity(0)),
        cpu=cpu,
        kernel=platform.release(),
        python=platform.python_version(),
    )


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (before a run: is anything else running?)."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else 1.0 - (idle1 - idle0) / total


def gateway_version() -> str:
    """The commit under test, ``+dirty`` when gateway/ has uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (sha or "?") + ("+dirty" if dirty else "")


def _version_of(cmd: Sequence[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    """The first match of ``pattern`` in what ``cmd`` prints, or "?"."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


def versions(
    consul_bin: str, coredns: Path | None = None, *, dnsperf: bool = False
) -> dict[str, str]:
    """Versions of the servers (and of dnsperf if asked), and the gateway's commit."""
    out = {
        "dnsmasq": _version_of([find_binary("dnsmasq"), "--version"]),
        "knot": _version_of([find_binary("knotd"), "--version"]),
        "consul": _version_of([consul_bin, "version"]),
    }
    if coredns is not None:
        out["coredns"] = _version_of([str(coredns), "-version"])
    if dnsperf:
        # dnsperf has no --version; its help text names it.
        out["dnsperf"] = _version_of([find_binary("dnsperf"), "-h"], r"Version ([0-9.]+)")
    out["gateway"] = gateway_version()
    return out
