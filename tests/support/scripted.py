"""Scripted upstreams: loopback UDP (and TCP) sockets that answer as a test says.

Test-only: they let the forwarder tests make an upstream misbehave on purpose (spoofed
replies, truncation, silence, SERVFAIL), which no real server does on request. They run
inside the test's own event loop, not as processes, so they are not part of ``harness``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from typing import Self

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

# What a scripted upstream does with each query (return values are ignored).
Script = Callable[[bytes, tuple[str, int], socket.socket], object]
# Tries at a port free for both UDP and TCP: on a shared machine the UDP port
# the kernel picks may be some other process's TCP connection's port.
PORT_TRIES = 20


def _bind_pair(with_tcp: bool) -> tuple[socket.socket, socket.socket | None]:
    """A loopback UDP socket and, when asked, a TCP socket bound to the same port."""
    for _ in range(PORT_TRIES):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        if not with_tcp:
            return udp, None
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        tcp.setblocking(False)
        return udp, tcp
    raise OSError(f"no port free for both UDP and TCP in {PORT_TRIES} tries")


def answer_for(query: bytes, address: str = "192.0.2.7", *, tc: bool = False) -> bytes:
    """A reply to ``query`` with one A record ``address`` (or empty with TC=1)."""
    msg = dns.message.from_wire(query)
    reply = dns.message.make_response(msg)
    if tc:
        reply.flags |= dns.flags.TC
    else:
        reply.answer.append(dns.rrset.from_text("www.example.", 60, "IN", "A", address))
    return reply.to_wire()


def reply_to(
    query: bytes,
    *addresses: str,
    ttl: int = 60,
    tc: bool = False,
    edns: bool = True,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
) -> bytes:
    """A reply to ``query`` with A records for its own name (``edns``: OPT as the query had)."""
    msg = dns.message.from_wire(query)
    reply = dns.message.make_response(msg)
    reply.set_rcode(rcode)
    if not edns:
        reply.use_edns(False)
    if tc:
        reply.flags |= dns.flags.TC
    if addresses:
        reply.answer.append(dns.rrset.from_text(msg.question[0].name, ttl, "IN", "A", *addresses))
    # Whatever size the query asked for: a scripted upstream may ignore it on purpose.
    return reply.to_wire(max_size=65535)


# What a scripted upstream answers over TCP to one query: the reply, or None to hang up.
TcpScript = Callable[[bytes], bytes | None]


class ScriptedUpstream:
    """UDP (and optional TCP) on 127.0.0.1, answering through ``script``.

    Over TCP (when ``tcp_address`` is given) it always answers with that address, which
    is how a test tells a TCP retry's answer from the UDP one; ``tcp_script`` answers
    over TCP as a test says instead. Without either, nothing listens on the TCP port
    (connections are refused). ``queries`` and ``tcp_queries`` record what arrived;
    ``tcp_connections`` counts connections, answered or not.
    """

    def __init__(
        self, script: Script, tcp_address: str | None = None, *, tcp_script: TcpScript | None = None
    ) -> None:
        self.tcp_address = tcp_address
        self.tcp_script = tcp_script
        self.udp, self._tcp_socket = _bind_pair(tcp_address is not None or tcp_script is not None)
        self.port = self.udp.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.script = script
        self.queries: list[bytes] = []
        self.tcp_queries: list[bytes] = []
        self.tcp_connections = 0
        self.tcp_server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.udp.fileno(), self._on_udp)
        if self._tcp_socket is not None:
            self.tcp_server = await asyncio.start_server(self._on_tcp, sock=self._tcp_socket)

    def _on_udp(self) -> None:
        try:
            data, addr = self.udp.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        self.queries.append(data)
        self.script(data, addr, self.udp)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_connections += 1
        try:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            query = await reader.readexactly(size)
            self.tcp_queries.append(query)
            if self.tcp_script is not None:
                reply = self.tcp_script(query)
            else:
                assert self.tcp_address is not None
                reply = answer_for(query, self.tcp_address)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.udp.fileno())
        self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        elif self._tcp_socket is not None:  # never started
            self._tcp_socket.close()


class UpstreamThread:
    """Scripted upstreams served from their own thread and event loop.

    For tests that drive the gateway subprocess with blocking clients: the test's
    thread waits in a query while the upstreams answer here. Scripts run on this
    thread's loop (``asyncio.get_running_loop()`` in a script is that loop, e.g. to
    answer late with ``call_later``).
    """

    def __init__(self, *upstreams: ScriptedUpstream) -> None:
        self.upstreams = upstreams
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        for up in self.upstreams:
            asyncio.run_coroutine_threadsafe(up.start(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            for up in self.upstreams:
                up.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
