"""CoreDNS as a benchmark peer: its Corefile, its process, and how to get the binary.

CoreDNS is not packaged for Debian here, so :func:`coredns_binary` builds a small one (just
the plugins the Corefile uses) from the Go module proxy into the user's cache directory,
outside the repository, once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.ports import LOOPBACK
from harness.process import DnsServerProcess
from harness.zone import ZONE

CACHE_DIR = Path(
    os.environ.get("CONSUL_GATEWAY_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "consul-dns-gateway"
)
COREDNS_VERSION = "v1.15.0"


class CoreDNSServer(DnsServerProcess):
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
    """No CoreDNS binary could be had (no Go, or the build failed or took too long)."""


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
