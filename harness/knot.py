"""Knot DNS as the authoritative upstream, serving the test zone of ``harness.zone``.

A plain child process with its config, zone file, control socket and state in its own
temporary directory, never a system service, and only on loopback.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rdatatype

from harness.ports import LOOPBACK
from harness.process import DnsServerProcess, current_user_group, find_binary
from harness.zone import ZONE, ZONE_RECORDS, ZoneRecord, zone_file_text


class KnotUpstream(DnsServerProcess):
    """Knot DNS authoritative for ``example.test.`` (see ``ZONE_RECORDS``), or for
    ``zone`` with ``records`` of the caller's.

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
        zone: str = ZONE,
    ) -> None:
        # Always a fresh short temp dir: the control socket lives there and Unix
        # socket paths are limited to ~107 bytes, which pytest's tmp_path can exceed.
        super().__init__(host=host, port=port)
        self.records = tuple(records)
        # Another zone (e.g. a reverse zone) takes records written for it.
        self.zone = zone
        self.probe_name = zone
        self.zone_path = self.workdir / "zone.db"
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
        user, group = current_user_group()
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
  - domain: {self.zone}
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
