"""The servers under test, their memory, and the CoreDNS build.

Everything listens on 127.0.0.1 on free ports. Processes are the fixtures of
``tests.support`` (Knot, dnsmasq, the gateway, the Consul agent) plus CoreDNS here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.support.consul import ConsulAgent
from tests.support.gateway_proc import GatewayProcess
from tests.support.ports import LOOPBACK
from tests.support.upstream import (
    ZONE,
    DnsmasqServer,
    KnotUpstream,
    ServerProcess,
    find_binary,
)

CACHE_DIR = Path(
    os.environ.get("CONSUL_GATEWAY_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "consul-dns-gateway"
)
COREDNS_VERSION = "v1.15.0"


# ------------------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                out += [int(p) for p in text.split()]
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (e.g. the gateway's ``--workers`` children)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


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


# ------------------------------------------------------------------------ servers


@dataclass
class Server:
    """One server under test, however it was started."""

    key: str
    host: str
    port: int
    pid: int
    process: ServerProcess | ConsulAgent
    notes: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    @property
    def alive(self) -> bool:
        return self.process.running

    def log_tail(self, chars: int = 3000) -> str:
        if isinstance(self.process, ConsulAgent):
            return self.process.log_tail(60)[-chars:]
        return self.process.log_tail(chars)


def probe(host: str, port: int, name: str, rdtype: str, timeout: float = 2.0) -> str:
    """rcode and answer count of one UDP query, for the start-up sanity line."""
    try:
        msg = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        resp = dns.query.udp(msg, host, port=port, timeout=timeout)
    except Exception as exc:  # a report line, not a failure
        return f"error {type(exc).__name__}"
    return f"{dns.rcode.to_text(resp.rcode())}/{sum(len(r) for r in resp.answer)}"


class CoreDNSServer(ServerProcess):
    """CoreDNS with ``forward`` + ``cache`` for ``.`` (Knot) and ``consul.`` (Consul DNS)."""

    label = "coredns"
    probe_name = ZONE

    def __init__(self, binary: Path, upstream: str, consul_dns: str) -> None:
        super().__init__(host=LOOPBACK)
        self.binary = binary
        self.upstream = upstream
        self.consul_dns = consul_dns
        self.corefile = self.workdir / "Corefile"

    def prepare(self) -> None:
        # bind: loopback only (CoreDNS listens on every address otherwise).
        self.corefile.write_text(
            f""".:{self.port} {{
    bind {self.host}
    errors
    forward . {self.upstream}
    cache
}}
consul.:{self.port} {{
    bind {self.host}
    errors
    forward . {self.consul_dns}
    cache
}}
"""
        )

    def command(self) -> list[str]:
        return [str(self.binary), "-conf", str(self.corefile), "-quiet"]


class CoreDNSUnavailable(RuntimeError):
    pass


_COREDNS_MAIN = """package main

// A CoreDNS with only the plugins the benchmark's Corefile uses.
import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
)

func init() {
	// Plugin order, as in CoreDNS's plugin.cfg.
	dnsserver.Directives = []string{"bind", "errors", "cache", "forward"}
}

func main() { coremain.Run() }
"""


def coredns_binary(version: str = COREDNS_VERSION, timeout: float = 600.0) -> Path:
    """A CoreDNS binary: ``$COREDNS_BIN``, the cached build, or a fresh build.

    Built from the Go module proxy (CoreDNS is Apache-2.0) as a small wrapper module in the
    cache directory, outside the repository, with just the plugins the Corefile needs.
    Raises CoreDNSUnavailable with the reason when it cannot be had within ``timeout``.
    """
    env_bin = os.environ.get("COREDNS_BIN", "").strip()
    if env_bin:
        return Path(env_bin)
    binary = CACHE_DIR / f"coredns-{version}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None:
        raise CoreDNSUnavailable("Go is not installed")
    work = CACHE_DIR / f"coredns-build-{version}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(
        f"module corednsbench\n\ngo 1.24\n\nrequire github.com/coredns/coredns {version}\n"
    )
    (work / "main.go").write_text(_COREDNS_MAIN)
    env = dict(os.environ)
    # As tools/build-consul.sh: local toolchain, no checksum-database lookups.
    env.update(GOTOOLCHAIN="local", GOSUMDB="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    log = work / "build.log"
    tmp = work / "coredns.tmp"
    with open(log, "w") as out:
        for step in (
            [go, "mod", "tidy"],
            [go, "build", "-trimpath", "-o", str(tmp), "."],
        ):
            try:
                proc = subprocess.run(
                    step, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                raise CoreDNSUnavailable(
                    f"`{' '.join(step[1:3])}` took longer than {timeout:.0f}s"
                ) from None
            if proc.returncode != 0:
                out.flush()
                tail = log.read_text(errors="replace")[-800:]
                raise CoreDNSUnavailable(f"`go {' '.join(step[1:3])}` failed: {tail}")
    tmp.replace(binary)
    return binary


# ----------------------------------------------------------------------- versions


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Unavailable|Timeout)\w*: .*$")


def exception_counts(log_text: str) -> dict[str, int]:
    """Final lines of the tracebacks in a log, counted (``module.Error: message``)."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        if _EXC_LINE.match(line):
            counts[line[:200]] = counts.get(line[:200], 0) + 1
    return counts


def _first_line(cmd: Sequence[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


def versions(consul_bin: str, coredns: Path | None) -> dict[str, str]:
    out = {
        "dnsmasq": _first_line([find_binary("dnsmasq"), "--version"]),
        "knot": _first_line([find_binary("knotd"), "--version"]),
        "consul": _first_line([consul_bin, "version"]),
    }
    if coredns is not None:
        out["coredns"] = _first_line([str(coredns), "-version"])
    return out


def scrape_metrics(addr: str, timeout: float = 3.0) -> dict[str, float]:
    """The gateway's Prometheus text, as ``{name: value}``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{addr}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


__all__ = [
    "ConsulAgent",
    "CoreDNSServer",
    "CoreDNSUnavailable",
    "DnsmasqServer",
    "GatewayProcess",
    "KnotUpstream",
    "Server",
    "coredns_binary",
    "exception_counts",
    "peak_rss_kb",
    "probe",
    "process_tree",
    "reset_peak_rss",
    "rss_kb",
    "scrape_metrics",
    "versions",
]
