"""dnsmasq as a caching forwarder: a peer in the benchmark and a fixture in tests.

Configured only by its command line (never /etc/dnsmasq.conf or /etc/resolv.conf), on
loopback, with loopback upstreams only.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.ports import LOOPBACK, is_loopback
from harness.process import DnsServerProcess, current_user_group, find_binary


class DnsmasqServer(DnsServerProcess):
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
            if addr and not is_loopback(addr):
                raise ValueError(f"dnsmasq upstream {server!r} is not a loopback address")
        super().__init__(host=host, port=port)
        self.servers = tuple(servers)
        self.cache_size = cache_size
        self.log_queries = log_queries
        self.extra_args = tuple(extra_args)
        self.dnsmasq = find_binary("dnsmasq")

    def command(self) -> list[str]:
        user, group = current_user_group()
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
