"""CPU instructions per query, counted by callgrind: repeatable on a busy machine.

``python -m bench.instructions [--cases catalog,cached,miss] [--paths auto,off]``
runs each case twice under ``valgrind --tool=callgrind`` (PYTHONHASHSEED=0),
with N and 2N queries, and prints (instructions(2N) - instructions(N)) / N:
the cost of one more query, start-up and warm-up excluded. Queries go over
real loopback sockets through the real UDP listener, resolver and (for
misses) forwarder, on uvloop, in one process; callgrind counts user-space
instructions, so system calls' kernel time is not in the figures (batching
saves that too). The client's own sends and reads are included and are the
same on every path.

Cases: ``catalog`` = ``web.service.consul`` A (three weighted instances),
``cached`` = a forwarded name answered from the cache, ``miss`` = a fresh
name every query, forwarded to an upstream socket in the same process that
answers at once. ``--run CASE PATH N`` is the measured child itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog import static as static_catalog
from gateway.catalog.source import StaticSource
from gateway.forward.forwarder import Forwarder
from gateway.metrics import Metrics
from gateway.options import EMBEDDED_CATALOG, Config, Endpoint
from gateway.server.resolver import Resolver
from gateway.server.transport import UdpListener

CASES = ("catalog", "cached", "miss")
PATHS = ("auto", "off")
LOOPBACK = "127.0.0.1"
BATCH = 64  # client queries in flight at a time, as dnsperf keeps many
DEFAULT_QUERIES = 4096
CATALOG_NAME = "web.service.consul."
CACHED_NAME = "cached.example.test."
MISS_SUFFIX = ".miss.example.test."
UPSTREAM_TTL = 60
TIMEOUT_S = 30.0
RD = 0x0100
QR_RD_RA = 0x8180
A_IN = b"\x00\x01\x00\x01"
# The upstream's answer: the question's name (pointer), A, IN, TTL, 192.0.2.1.
ANSWER = b"\xc0\x0c" + A_IN + struct.pack("!IH", UPSTREAM_TTL, 4) + bytes((192, 0, 2, 1))


def _query(name: str, msg_id: int) -> bytes:
    """A plain A query (RD, no EDNS), written out: dnspython here would be counted too."""
    qname = b"".join(bytes((len(label),)) + label.encode() for label in name.split(".") if label)
    return struct.pack("!HHHHHH", msg_id, RD, 1, 0, 0, 0) + qname + b"\x00" + A_IN


def _names(case: str, count: int) -> list[bytes]:
    if case == "catalog":
        names = [CATALOG_NAME] * count
    elif case == "cached":
        names = [CACHED_NAME] * count
    else:
        names = [f"m{i}-{random.getrandbits(32):08x}{MISS_SUFFIX}" for i in range(count)]
    return [_query(name, i & 0xFFFF) for i, name in enumerate(names)]


class _Upstream:
    """Answers every query at once with one A record, written by hand (cheap)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            question_end = data.index(0, 12) + 5  # the query's OPT is not echoed
            head = data[:2] + struct.pack("!HHHHH", QR_RD_RA, 1, 1, 0, 0)
            self.sock.sendto(head + data[12:question_end] + ANSWER, addr)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def _drive(case: str, path: str, queries: int) -> None:
    loop = asyncio.get_running_loop()
    upstream = _Upstream(loop)
    host, port = upstream.sock.getsockname()
    config = Config(upstream=(Endpoint(host, port),))
    forwarder = Forwarder(loop, config.upstream or (), timeout=2.0, deadline=5.0,
                          max_inflight=10_000)  # fmt: skip
    cache = ForwardCache(CachePolicy(100_000, 0, 3600, 600, 0.0, 30), time.monotonic)
    resolver = Resolver(
        config,
        source=StaticSource(static_catalog.load(EMBEDDED_CATALOG, "dc1")),
        zone_set={},
        forwarder=forwarder,
        cache=cache,
        metrics=Metrics(),
        rng=random.Random(1),
        call_later=loop.call_later,
    )
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((LOOPBACK, 0))
    server.setblocking(False)
    batch = None
    if path == "auto":
        try:  # absent before issue 11, and where the helper is not built
            from gateway.server import batchio

            batch = batchio.load()
        except ImportError:
            pass
    listener = (UdpListener(resolver, server, None, batch) if batch is not None
                else UdpListener(resolver, server))  # fmt: skip
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((LOOPBACK, 0))
    client.setblocking(False)
    target = server.getsockname()
    packets = _names(case, queries)
    got = 0
    waiter: asyncio.Future[None] | None = None

    def on_reply() -> None:
        nonlocal got
        while True:
            try:
                client.recv(65535)
            except BlockingIOError:
                break
            got += 1
        if waiter is not None and not waiter.done() and got >= expected:
            waiter.set_result(None)

    loop.add_reader(client.fileno(), on_reply)
    expected = 0
    try:
        for start in range(0, queries, BATCH):
            chunk = packets[start : start + BATCH]
            expected += len(chunk)
            waiter = loop.create_future()
            for packet in chunk:
                client.sendto(packet, target)
            async with asyncio.timeout(TIMEOUT_S):
                await waiter
    finally:
        loop.remove_reader(client.fileno())
        client.close()
        listener.close()
        forwarder.close()
        upstream.close()
    if got != queries:
        raise SystemExit(f"{got} replies to {queries} queries")


def _run_child(case: str, path: str, queries: int) -> None:
    import uvloop

    # Warm-up outside the count's difference: the first query of a name is the slow path.
    uvloop.run(_drive(case, path, queries))


def _instructions(case: str, path: str, queries: int, workdir: Path) -> int:
    out = workdir / f"cg.{case}.{path}.{queries}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
           "-m", "bench.instructions", "--run", case, path, str(queries)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=Path(__file__).parent.parent)
    match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no summary line in {out}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES)
    parser.add_argument("--run", nargs=3, metavar=("CASE", "PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        case, path, n = args.run
        _run_child(case, path, int(n))
        return 0
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        for case in args.cases.split(","):
            for path in args.paths.split(","):
                one = _instructions(case, path, args.queries, Path(tmp))
                two = _instructions(case, path, 2 * args.queries, Path(tmp))
                per = (two - one) / args.queries
                print(f"{case:8} {path:5} {per:10,.0f} instructions/query", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
