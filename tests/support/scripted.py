"""Scripted upstreams: loopback UDP (and TCP) sockets that answer as a test says.

Test-only: they let the forwarder tests make an upstream misbehave on purpose (spoofed
replies, truncation, silence, SERVFAIL), which no real server does on request. They run
inside the test's own event loop, not as processes, so they are not part of ``harness``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rrset

# What a scripted upstream does with each query (return values are ignored).
Script = Callable[[bytes, tuple[str, int], socket.socket], object]


def answer_for(query: bytes, address: str = "192.0.2.7", *, tc: bool = False) -> bytes:
    """A reply to ``query`` with one A record ``address`` (or empty with TC=1)."""
    msg = dns.message.from_wire(query)
    reply = dns.message.make_response(msg)
    if tc:
        reply.flags |= dns.flags.TC
    else:
        reply.answer.append(dns.rrset.from_text("www.example.", 60, "IN", "A", address))
    return reply.to_wire()


class ScriptedUpstream:
    """UDP (and optional TCP) on 127.0.0.1, answering through ``script``.

    Over TCP (when ``tcp_address`` is given) it always answers with that address, which
    is how a test tells a TCP retry's answer from the UDP one.
    """

    def __init__(self, script: Script, tcp_address: str | None = None) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.port = self.udp.getsockname()[1]
        self.script = script
        self.queries: list[bytes] = []
        self.tcp_address = tcp_address
        self.tcp_server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.udp.fileno(), self._on_udp)
        if self.tcp_address is not None:
            self.tcp_server = await asyncio.start_server(self._on_tcp, "127.0.0.1", self.port)

    def _on_udp(self) -> None:
        data, addr = self.udp.recvfrom(4096)
        self.queries.append(data)
        self.script(data, addr, self.udp)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        query = await reader.readexactly(size)
        assert self.tcp_address is not None
        reply = answer_for(query, self.tcp_address)
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.udp.fileno())
        self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
