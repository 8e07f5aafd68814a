"""Real DNS servers as test fixtures: Knot (authoritative upstream) and dnsmasq.

Both run as plain child processes with their own config and state in a
temporary directory, never as system services, and only on loopback. The zone
served by Knot is generated from ``ZONE_RECORDS`` so tests can import the same
constants the zone file was written from instead of repeating literals.

``ServerProcess`` is the shared process plumbing (log file, readiness probe,
stop/kill/restart); ``tests.support.gateway_proc`` reuses it for the gateway.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import dns.message
import dns.rcode
import dns.rdatatype

from tests.support.ports import LOOPBACK, free_port

# --------------------------------------------------------------------------- zone


ZONE = "example.test."
DEFAULT_TTL = 300
# The SOA's own TTL is deliberately larger than its MINIMUM field so a test can
# tell which one a cache used: RFC 2308 says negative answers live for
# min(SOA TTL, MINIMUM), i.e. NEGATIVE_TTL.
SOA_TTL = 3600
SOA_MINIMUM = 60
NEGATIVE_TTL = min(SOA_TTL, SOA_MINIMUM)
SOA_SERIAL = 1

NS_NAME = "ns1." + ZONE
NS_A = "192.0.2.53"

WWW = "www." + ZONE
WWW_A = "192.0.2.10"
WWW_AAAA = "2001:db8::10"
WWW_TTL = 300

MAIL = "mail." + ZONE
MAIL_A = "192.0.2.25"
MX_PREFERENCE = 10

# alias -> alias2 -> www, all inside the zone, so Knot returns the whole chain
# plus the final A/AAAA in one answer.
ALIAS = "alias." + ZONE
ALIAS2 = "alias2." + ZONE

# Eight distinct 100-character strings: ~950 bytes on the wire, which is more
# than the 512 bytes of plain UDP (forces TC=1 without EDNS) but less than the
# 1232-byte EDNS payload tests use, so EDNS answers arrive whole over UDP.
BIGTXT = "bigtxt." + ZONE
BIGTXT_STRINGS: tuple[str, ...] = tuple(
    f"txt{i}-".ljust(100, "abcdefghijklmnopqrstuvwxyz"[i]) for i in range(8)
)

V4ONLY = "v4only." + ZONE  # A only: AAAA gives NODATA
V4ONLY_A = "192.0.2.40"

SHORT = "short." + ZONE  # for expiry tests without long sleeps
SHORT_A = "192.0.2.50"
SHORT_TTL = 2

MISSING = "does-not-exist." + ZONE  # any name not listed gives NXDOMAIN


@dataclass(frozen=True)
class ZoneRecord:
    """One resource record of the test zone, ``rdata`` in zone-file syntax."""

    name: str  # absolute owner name
    rdtype: str
    rdata: str
    ttl: int = DEFAULT_TTL

    def zone_line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rdtype} {self.rdata}"


def _txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


ZONE_RECORDS: tuple[ZoneRecord, ...] = (
    ZoneRecord(
        ZONE,
        "SOA",
        f"{NS_NAME} hostmaster.{ZONE} {SOA_SERIAL} 3600 900 604800 {SOA_MINIMUM}",
        SOA_TTL,
    ),
    ZoneRecord(ZONE, "NS", NS_NAME),
    ZoneRecord(NS_NAME, "A", NS_A),
    ZoneRecord(ZONE, "MX", f"{MX_PREFERENCE} {MAIL}"),
    ZoneRecord(WWW, "A", WWW_A, WWW_TTL),
    ZoneRecord(WWW, "AAAA", WWW_AAAA, WWW_TTL),
    ZoneRecord(MAIL, "A", MAIL_A),
    ZoneRecord(ALIAS, "CNAME", ALIAS2),
    ZoneRecord(ALIAS2, "CNAME", WWW),
    *(ZoneRecord(BIGTXT, "TXT", _txt(s)) for s in BIGTXT_STRINGS),
    ZoneRecord(V4ONLY, "A", V4ONLY_A),
    ZoneRecord(SHORT, "A", SHORT_A, SHORT_TTL),
)


def zone_file_text(records: Sequence[ZoneRecord] = ZONE_RECORDS) -> str:
    """The zone file for ``records`` (absolute names, so no $ORIGIN subtleties)."""
    return "".join(r.zone_line() + "\n" for r in records)


# ------------------------------------------------------------------ processes


class ServerStartError(RuntimeError):
    """A fixture server exited or never answered; the message has its log tail."""


def find_binary(name: str) -> str:
    """Absolute path of ``name``; also looks in sbin, which a non-root PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} not found (is the Debian package installed?)")
    return found


def _current_user_group() -> tuple[str, str]:
    # Knot and dnsmasq switch to an unprivileged user by default; naming the
    # user we already are makes that a no-op whether or not we are root.
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def host_port(host: str, port: int) -> str:
    """``host:port`` with brackets around IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerProcess:
    """A child process serving DNS on ``host``:``port``, logging to a file.

    Subclasses supply ``command()``. Readiness means: some response to the probe
    query (``probe_name``/``probe_type``/``probe_class``) that ``accept()``
    likes arrives over UDP. The log file is appended to across restarts so a
    failure message shows the whole history.
    """

    label = "server"
    probe_name = "."
    probe_type = "SOA"
    probe_class = "IN"

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        workdir: Path | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"test servers may only use loopback addresses, not {host}")
        self.host = host
        self.port = port if port is not None else free_port(host)
        # Own the directory only if we made it, so close() never deletes a
        # caller's (e.g. pytest's tmp_path) directory.
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"{self.label}-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path if log_path is not None else self.workdir / f"{self.label}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # ---- to override

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Hook run before every (re)start, e.g. to write config files."""

    def accept(self, response: dns.message.Message) -> bool:
        """Whether a probe response proves readiness; any response by default."""
        return True

    # ---- public API

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            raise RuntimeError(f"{self.label} already running (pid {self.pid})")
        self.prepare()
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            # Own process group: a Ctrl-C aimed at pytest does not hit the child
            # first, and teardown stays in control of the shutdown order.
            start_new_session=True,
        )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL without any chance to clean up, like a crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_log()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop if still running, then start again on the same port."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop and remove the temporary directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _wait_ready(self, deadline: float) -> None:
        # One socket for the whole wait, resending the same query every
        # 100 ms: a slow answer to an earlier send still counts, which matters
        # for servers that first try (and time out on) an upstream.
        query = dns.message.make_query(self.probe_name, self.probe_type, self.probe_class)
        wire = query.to_wire()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last: str = "no response"
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            next_send = 0.0
            while True:
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"{self.label} exited with code {code} before answering DNS on "
                        f"{self.address}; log tail:\n{self.log_tail()}"
                    )
                now = time.monotonic()
                if now >= deadline:
                    raise ServerStartError(
                        f"{self.label} did not answer {self.probe_name} {self.probe_type} on "
                        f"{self.address} in time ({last}); log tail:\n{self.log_tail()}"
                    )
                if now >= next_send:
                    # Unconnected socket: ICMP port-unreachable is not reported,
                    # but a transient send error is no reason to give up either.
                    with contextlib.suppress(OSError):
                        sock.sendto(wire, (self.host, self.port))
                    next_send = now + 0.1
                try:
                    data = sock.recv(65535)
                except (TimeoutError, OSError):
                    continue
                try:
                    response = dns.message.from_wire(data)
                except Exception as err:  # garbage is not readiness, keep waiting
                    last = f"unparsable response: {err}"
                    continue
                if response.id != query.id:
                    continue
                if self.accept(response):
                    return
                last = f"last rcode {dns.rcode.to_text(response.rcode())}"


def _is_loopback(host: str) -> bool:
    return host == "::1" or host.startswith("127.")


# ----------------------------------------------------------------------- Knot


class KnotUpstream(ServerProcess):
    """Knot DNS authoritative for ``example.test.`` (see ``ZONE_RECORDS``).

    ``query_count()`` reads Knot's mod-stats counters over its control socket;
    they reset on every (re)start.
    """

    label = "knot"
    probe_name = ZONE
    probe_type = "SOA"

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        records: Sequence[ZoneRecord] = ZONE_RECORDS,
    ) -> None:
        # Always a fresh short temp dir: the control socket lives there and Unix
        # socket paths are limited to ~107 bytes, which pytest's tmp_path can exceed.
        super().__init__(host=host, port=port)
        self.records = tuple(records)
        self.zone_path = self.workdir / "example.test.zone"
        self.config_path = self.workdir / "knot.conf"
        self.control_socket = self.workdir / "knot.sock"
        self.knotd = find_binary("knotd")
        self.knotc = find_binary("knotc")

    def prepare(self) -> None:
        self.zone_path.write_text(zone_file_text(self.records))
        self.config_path.write_text(self._config_text())
        # A pidfile left by kill() could name a live, unrelated process if the
        # pid was reused, and knotd would then refuse to start.
        (self.workdir / "knot.pid").unlink(missing_ok=True)

    def _config_text(self) -> str:
        user, group = _current_user_group()
        d = self.workdir
        listen = f"{self.host}@{self.port}"
        # zonefile-sync -1 / journal-content none: Knot must never rewrite our
        # zone file or keep state between restarts. One worker of each kind
        # keeps start-up fast; the load from tests is tiny. mod-stats is cheap
        # and gives query counters via knotc.
        return f"""\
server:
    rundir: "{d}"
    user: {user}:{group}
    pidfile: "{d}/knot.pid"
    listen: {listen}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

database:
    storage: "{d}"

control:
    listen: "{self.control_socket}"

log:
  - target: stderr
    any: info

mod-stats:
  - id: counters

template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    global-module: mod-stats/counters

zone:
  - domain: {ZONE}
    file: "{self.zone_path}"
"""

    def command(self) -> list[str]:
        return [self.knotd, "-c", str(self.config_path)]

    def accept(self, response: dns.message.Message) -> bool:
        # Knot binds before the zone is loaded; only the SOA proves it serves it.
        return response.rcode() == dns.rcode.NOERROR and any(
            rrset.rdtype == dns.rdatatype.SOA for rrset in response.answer
        )

    def stats(self) -> dict[str, int]:
        """Knot's counters, e.g. ``{"mod-stats.request-protocol[udp4]": 3}``.

        Knot omits counters that are still zero.
        """
        out = subprocess.run(
            [self.knotc, "-s", str(self.control_socket), "stats"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        result: dict[str, int] = {}
        for line in out.splitlines():
            key, sep, value = line.partition(" = ")
            if sep:
                with contextlib.suppress(ValueError):
                    result[key.strip()] = int(value)
        return result

    def query_count(self) -> int:
        """Queries received since the last start (UDP + TCP, incl. readiness probes)."""
        return sum(
            v for k, v in self.stats().items() if k.startswith("mod-stats.request-protocol[")
        )


# -------------------------------------------------------------------- dnsmasq


class DnsmasqServer(ServerProcess):
    """dnsmasq as a caching forwarder, configured only by its command line.

    ``servers`` are dnsmasq ``--server`` values, e.g. ``"127.0.0.1#5300"`` or
    ``"/consul/127.0.0.1#8600"``; every address in them must be loopback.
    """

    label = "dnsmasq"
    # dnsmasq answers version.bind CH TXT itself, so readiness does not depend on
    # the upstreams being up.
    probe_name = "version.bind."
    probe_type = "TXT"
    probe_class = "CH"

    def __init__(
        self,
        servers: Sequence[str],
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        cache_size: int = 10000,
        log_queries: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if host != LOOPBACK:
            raise ValueError("DnsmasqServer listens on 127.0.0.1 only")
        for server in servers:
            addr = server.rsplit("/", 1)[-1].split("#", 1)[0]
            if addr and not _is_loopback(addr):
                raise ValueError(f"dnsmasq upstream {server!r} is not a loopback address")
        super().__init__(host=host, port=port)
        self.servers = tuple(servers)
        self.cache_size = cache_size
        self.log_queries = log_queries
        self.extra_args = tuple(extra_args)
        self.dnsmasq = find_binary("dnsmasq")

    def command(self) -> list[str]:
        user, group = _current_user_group()
        args = [
            self.dnsmasq,
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # not /etc/dnsmasq.conf
            "--no-resolv",  # never /etc/resolv.conf: only our loopback upstreams
            "--no-hosts",
            "--no-poll",
            f"--port={self.port}",
            f"--listen-address={self.host}",
            "--bind-interfaces",
            f"--cache-size={self.cache_size}",
            f"--user={user}",
            f"--group={group}",
            "--pid-file=",  # empty: no pidfile, no clash with a system dnsmasq
            "--log-facility=-",  # stderr, i.e. our log file
            *(f"--server={s}" for s in self.servers),
        ]
        if self.log_queries:
            args.append("--log-queries")
        args.extend(self.extra_args)
        return args
