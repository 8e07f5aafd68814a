"""dnsmasq as a caching forwarder: a peer in the benchmark and a fixture in tests.

Configured only by its command line (never /etc/dnsmasq.conf or /etc/resolv.conf), on
loopback, with loopback upstreams only; or, with ``conf_file``, by a configuration file
of the caller's (the differential test of ``--dnsmasq-conf``), which must keep to
loopback itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.ports import LOOPBACK, is_loopback
from harness.process import DnsServerProcess, current_user_group, find_binary


class DnsmasqServer(DnsServerProcess):
    """dnsmasq as a caching forwarder, configured only by its command line.

    ``servers`` are dnsmasq ``--server`` values, e.g. ``"127.0.0.1#5300"`` or
    ``"/consul/127.0.0.1#8600"``; every address in them must be loopback.

    ``conf_file``: dnsmasq reads that file instead of the defaults above
    (``cache_size``, ``--no-resolv``, ``--no-hosts``, ``--no-poll``), included from a
    file of ours that sets only the port and the loopback listen address, as
    ``port=`` and ``listen-address=`` lines (the file's own would clash with them).
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
        conf_file: Path | None = None,
    ) -> None:
        if host != LOOPBACK:
            raise ValueError("DnsmasqServer listens on 127.0.0.1 only")
        for server in servers:
            addr = server.rsplit("/", 1)[-1].split("#", 1)[0]
            if addr and not is_loopback(addr):
                raise ValueError(f"dnsmasq upstream {server!r} is not a loopback address")
        super().__init__(host=host, port=port)
        self.servers = tuple(servers)
        self.cache_size = cache_size
        self.log_queries = log_queries
        self.extra_args = tuple(extra_args)
        self.conf_file = conf_file
        self.top_conf = self.workdir / "dnsmasq.conf"
        self.dnsmasq = find_binary("dnsmasq")

    def prepare(self) -> None:
        if self.conf_file is not None:
            self.top_conf.write_text(
                f"port={self.port}\nlisten-address={self.host}\nbind-interfaces\n"
                f"conf-file={self.conf_file}\n"
            )

    def command(self) -> list[str]:
        user, group = current_user_group()
        if self.conf_file is not None:
            return [
                self.dnsmasq,
                "--keep-in-foreground",
                f"--conf-file={self.top_conf}",
                f"--user={user}",
                f"--group={group}",
                "--pid-file=",
                "--log-facility=-",
                *(f"--server={s}" for s in self.servers),
                *self.extra_args,
            ]
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
