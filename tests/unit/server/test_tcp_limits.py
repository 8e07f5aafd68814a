"""TCP framing and the connection table, driven with plain values (no sockets)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.options import Config
from gateway.server.tcp_limits import (
    REFUSED_FULL,
    REFUSED_PER_CLIENT,
    ConnectionTable,
    Framer,
    TcpLimits,
)


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def test_framer_hands_out_whole_messages_only() -> None:
    framer = Framer()
    assert not framer.ready and not framer.waiting
    stream = framed(b"first") + framed(b"") + framed(b"third")
    framer.feed(stream[:1])  # half a length
    assert framer.waiting and framer.pop() is None
    framer.feed(stream[1:8])  # "first" whole, one byte of the next length
    assert framer.pop() == b"first"
    assert framer.waiting
    framer.feed(stream[8:])
    assert [framer.pop(), framer.pop(), framer.pop()] == [b"", b"third", None]
    assert len(framer) == 0 and not framer.waiting


@dataclass(eq=False)
class Conn:
    client: str
    idle: bool = True
    queued: int = 0

    def queued_now(self) -> int:
        return self.queued


def table(**limits: int) -> ConnectionTable[Conn]:
    settings = {"max_connections": 3, "max_per_client": 2, "max_queued_bytes": 1000}
    settings.update(limits)
    return ConnectionTable(**settings)


def test_per_client_cap_refuses_and_release_gives_the_slot_back() -> None:
    t = table()
    a1, a2 = Conn("192.0.2.1"), Conn("192.0.2.1")
    for conn in (a1, a2):
        assert t.admit(conn.client).refused is None
        t.add(conn)
    assert t.admit("192.0.2.1").refused == REFUSED_PER_CLIENT
    assert t.admit("192.0.2.2").refused is None
    t.release(a1)
    t.release(a1)  # twice is harmless
    assert t.admit("192.0.2.1").refused is None
    assert len(t) == 1


def test_at_the_limit_the_oldest_idle_connection_makes_room() -> None:
    t = table(max_per_client=10)
    old, busy, young = Conn("a"), Conn("b", idle=False), Conn("c")
    for conn in (old, busy, young):
        t.add(conn)
    assert t.admit("d").shed == (old,)
    t.touch(old)  # it just completed a message: now the youngest
    assert t.admit("d").shed == (young,)
    young.idle = old.idle = False
    verdict = t.admit("d")
    assert verdict.refused == REFUSED_FULL and verdict.shed == ()


def test_queued_bytes_over_the_cap_close_the_worst_readers() -> None:
    t = table(max_connections=10, max_per_client=10)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    for conn in (a, b, c):
        t.add(conn)
    a.queued, b.queued = 400, 500
    assert t.note_queued(a, 400) == ()
    assert t.note_queued(b, 500) == ()
    assert t.queued_total == 900
    # a drained meanwhile without telling us: c's write is not over the cap after all.
    a.queued, c.queued = 0, 450
    assert t.note_queued(c, 450) == ()
    assert t.queued_total == 950
    c.queued = 700
    assert t.note_queued(c, 700) == (c,)  # 1200 > 1000: the one with the most goes
    assert t.queued_total == 500
    t.release(b)
    assert t.queued_total == 0


def test_limits_come_from_the_options() -> None:
    limits = TcpLimits.from_config(Config(tcp_max_per_client=5, tcp_message_timeout=0.5))
    assert (limits.max_per_client, limits.message_timeout) == (5, 0.5)
    assert limits.max_connections == Config().tcp_max_connections
