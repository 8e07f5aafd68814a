"""What access control and the UDP limits cost per packet on the fast path.

``python -m bench.access [--repeat K]`` runs the UDP listener's real reader
callback (``UdpListener._on_readable`` and ``_on_readable_checked``) over a
fake socket that hands it batches of the same catalog query (a fast-path
hit) and swallows the replies, so only Python's work per packet is timed:
no system calls. Cases: a loopback-only listener (no checks), a checked
listener whose client is not limited, one with the default amplification
bound, and one with the rate limit on as well (a rate no answer reaches).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import socket
import time
import timeit
from collections.abc import Callable
from typing import Any

import dns.message

from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog import static as static_catalog
from gateway.catalog.source import StaticSource
from gateway.metrics import Metrics
from gateway.options import EMBEDDED_CATALOG, Config
from gateway.server.access import AccessPolicy
from gateway.server.ratelimit import ResponseRateLimiter, UdpLimits
from gateway.server.resolver import Resolver
from gateway.server.transport import UDP_BATCH, Gate, UdpListener

QUERY_NAME = "web.service.consul."
CLIENT = ("10.99.0.2", 40000)
LOOPBACK_CLIENT = ("127.0.0.1", 40000)
# No answer reaches it: the limiter's bookkeeping is timed, never a drop.
UNREACHED_RATE = 1_000_000_000
BATCHES = 100  # reader wake-ups per timed run, UDP_BATCH packets each


class FakeSocket:
    """Hands out UDP_BATCH copies of one datagram per reader wake-up; sendto does nothing."""

    def __init__(self, data: bytes, addr: tuple[str, int], real: socket.socket) -> None:
        self._data = data
        self._addr = addr
        self._real = real
        self._left = UDP_BATCH

    def fileno(self) -> int:
        return self._real.fileno()

    def close(self) -> None:
        self._real.close()

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if self._left == 0:
            self._left = UDP_BATCH
            raise BlockingIOError
        self._left -= 1
        return self._data, self._addr

    def sendto(self, data: bytes, addr: Any) -> int:
        return len(data)


def _resolver(config: Config) -> Resolver:
    return Resolver(
        config,
        source=StaticSource(static_catalog.load(EMBEDDED_CATALOG, "dc1")),
        zone_set={},
        forwarder=None,
        cache=ForwardCache(CachePolicy(1000, 0, 3600, 600, 60.0, 30), time.monotonic),
        metrics=Metrics(),
        rng=random.Random(1),
    )


def _gate(resolver: Resolver, config: Config, rate: int) -> Gate:
    policy = AccessPolicy.from_config(config, [])
    limiter = ResponseRateLimiter(rate, 15.0, 2, time.monotonic) if rate else None
    limits = UdpLimits(limiter, config.max_amplification, resolver.metrics.counters)
    return Gate(resolver, policy, limits, drop_denied=False)


def _case_config(*, amplification: int) -> Config:
    anyone = (ipaddress.ip_network("0.0.0.0/0"),)
    return Config(
        upstream=(), allow=anyone, allow_recursion=anyone, max_amplification=amplification
    )


async def _measure(repeat: int) -> list[tuple[str, float]]:
    query = dns.message.make_query(QUERY_NAME, "A").to_wire()
    cases: list[tuple[str, Config | None, tuple[str, int], int]] = [
        ("loopback-only listener (no checks)", None, LOOPBACK_CLIENT, 0),
        ("checked, client not limited", _case_config(amplification=0), CLIENT, 0),
        ("checked, amplification bound (default)", _case_config(amplification=10), CLIENT, 0),
        ("checked, amplification + rate limit", _case_config(amplification=10), CLIENT,
         UNREACHED_RATE),
    ]  # fmt: skip
    listeners: list[tuple[str, UdpListener, Callable[[], None]]] = []
    try:
        for label, config, addr, rate in cases:
            resolver = _resolver(config or Config(upstream=()))
            gate = _gate(resolver, config, rate) if config is not None else None
            # A real descriptor for add_reader; it never becomes readable.
            fake = FakeSocket(query, addr, socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            listener = UdpListener(resolver, fake, gate)  # type: ignore[arg-type]
            listeners.append((label, listener, listener._on_readable if gate is None
                              else listener._on_readable_checked))  # fmt: skip
            listeners[-1][2]()  # the slow path once: the answer becomes a template
        # Interleaved short runs, best of each: the machine is shared, and noise
        # that hits one case for a while must not decide the comparison.
        best = {label: float("inf") for label, _, _ in listeners}
        for _ in range(repeat):
            for label, _, read in listeners:
                best[label] = min(best[label], timeit.timeit(read, number=BATCHES))
        for _, listener, _ in listeners:
            assert listener._resolver.metrics.counters["slow"] == 1, "left the fast path"
    finally:
        for _, listener, _ in listeners:
            listener.close()
    results = [(label, t / (BATCHES * UDP_BATCH) * 1e9) for label, t in best.items()]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access", description=__doc__)
    parser.add_argument("--repeat", type=int, default=200, help="best of this many runs")
    args = parser.parse_args(argv)
    results = asyncio.run(_measure(args.repeat))
    base = results[0][1]
    for label, ns in results:
        print(f"{label:45} {ns:7.0f} ns/packet  (+{ns - base:4.0f} ns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
