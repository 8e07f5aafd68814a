"""TCP's framing and limits as plain logic: no sockets, no loop, no clock.

``transport.py`` moves the bytes and owns the timers; what it asks here is
where a message ends (:class:`Framer`), whether a new connection may come
in and which old ones must make room for it, and which connections to close
when the replies queued for clients that do not read grow past the cap
(:class:`ConnectionTable`). Unit tests drive both with fakes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.options import Config

# Counters (``gateway.metrics``) of connections refused at accept.
REFUSED_PER_CLIENT = "tcp_refused_per_client"
REFUSED_FULL = "tcp_refused"


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """The TCP options, in one value (see their help in ``gateway.options``)."""

    idle_timeout: float
    message_timeout: float
    max_connections: int
    max_per_client: int
    max_pipelined: int
    max_queued_bytes: int

    @classmethod
    def from_config(cls, config: Config) -> TcpLimits:
        return cls(
            idle_timeout=config.tcp_idle_timeout,
            message_timeout=config.tcp_message_timeout,
            max_connections=config.tcp_max_connections,
            max_per_client=config.tcp_max_per_client,
            max_pipelined=config.tcp_max_pipelined,
            max_queued_bytes=config.tcp_max_queued_bytes,
        )


class Framer:
    """RFC 1035 4.2.2 / RFC 7766 8: each message follows its two-byte length.

    Holds the bytes read but not yet handed out; :meth:`pop` returns one
    whole message at a time.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def ready(self) -> bool:
        """A whole message is buffered."""
        buf = self._buffer
        return len(buf) >= 2 and len(buf) >= 2 + ((buf[0] << 8) | buf[1])

    @property
    def waiting(self) -> bool:
        """A message has begun and its rest has not arrived (the deadline runs)."""
        return bool(self._buffer) and not self.ready

    def pop(self) -> bytes | None:
        """The next whole message, without its length; None if there is none."""
        if not self.ready:
            return None
        buf = self._buffer
        end = 2 + ((buf[0] << 8) | buf[1])
        message = bytes(buf[2:end])
        # Deleting from the front of a bytearray moves its start, not the bytes.
        del buf[:end]
        return message

    def __len__(self) -> int:
        return len(self._buffer)


class Tracked(Protocol):
    """What the table needs to know of a connection."""

    @property
    def client(self) -> str:
        """The peer's address without the port: the unit of the per-client cap."""

    @property
    def idle(self) -> bool:
        """Nothing is owed to the client (no query unanswered, no reply queued)."""

    def queued_now(self) -> int:
        """Reply bytes waiting in our buffer for the client to read, right now."""


C = TypeVar("C", bound=Tracked)


@dataclass(frozen=True, slots=True)
class Admission(Generic[C]):
    """The verdict on a new connection: refused (and the counter), or admitted
    once ``shed`` are closed to make room."""

    refused: str | None
    shed: tuple[C, ...] = ()


class ConnectionTable(Generic[C]):
    """Connections oldest first, counted per client, with their queued bytes.

    "Oldest" is by last complete message (:meth:`touch`), so a connection a
    client keeps using is never the first to go; idle ones that only hold a
    slot (the one-byte floods of issue 9) are.
    """

    def __init__(self, *, max_connections: int, max_per_client: int, max_queued_bytes: int) -> None:
        self._max = max_connections
        self._max_per_client = max_per_client
        self._max_queued = max_queued_bytes
        self._order: OrderedDict[C, None] = OrderedDict()
        self._per_client: dict[str, int] = {}
        # The queued bytes last seen per connection, only where non-zero: a
        # buffer drains without telling us, so these may be too high, never
        # too low (each write is noted).
        self._queued: dict[C, int] = {}
        self.queued_total = 0

    def __len__(self) -> int:
        return len(self._order)

    def members(self) -> list[C]:
        """Every connection, oldest first (a copy: closing one changes the table)."""
        return list(self._order)

    def resize(self, *, max_connections: int, max_per_client: int, max_queued_bytes: int) -> None:
        """New caps (a reload); connections over them stay until they go on their own."""
        self._max = max_connections
        self._max_per_client = max_per_client
        self._max_queued = max_queued_bytes

    def admit(self, client: str) -> Admission[C]:
        """May ``client`` connect, and what must be closed first."""
        if self._per_client.get(client, 0) >= self._max_per_client:
            return Admission(REFUSED_PER_CLIENT)
        if len(self._order) < self._max:
            return Admission(None)
        victims = self.oldest_idle(len(self._order) - self._max + 1)
        if not victims:
            return Admission(REFUSED_FULL)
        return Admission(None, victims)

    def add(self, conn: C) -> None:
        self._order[conn] = None
        self._per_client[conn.client] = self._per_client.get(conn.client, 0) + 1

    def release(self, conn: C) -> None:
        """Forgets ``conn``; calling it twice is harmless."""
        if conn not in self._order:
            return
        del self._order[conn]
        left = self._per_client[conn.client] - 1
        if left:
            self._per_client[conn.client] = left
        else:
            del self._per_client[conn.client]
        self.queued_total -= self._queued.pop(conn, 0)

    def touch(self, conn: C) -> None:
        """``conn`` completed a message: it becomes the youngest."""
        if conn in self._order:
            self._order.move_to_end(conn)

    def oldest_idle(self, count: int) -> tuple[C, ...]:
        """Up to ``count`` idle connections, oldest first, to close for room."""
        found: list[C] = []
        if count > 0:
            for conn in self._order:
                if conn.idle:
                    found.append(conn)
                    if len(found) == count:
                        break
        return tuple(found)

    def note_queued(self, conn: C, queued: int) -> tuple[C, ...]:
        """``conn`` now has ``queued`` reply bytes waiting; the connections to
        close (most queued first) to bring the total under the cap."""
        before = self._queued.get(conn, 0)
        if queued == before or conn not in self._order:
            return ()
        if queued:
            self._queued[conn] = queued
        else:
            del self._queued[conn]
        self.queued_total += queued - before
        if self.queued_total <= self._max_queued:
            return ()
        # Over the cap by our figures; they may be stale, so read them again.
        for other in list(self._queued):
            now = other.queued_now()
            self.queued_total += now - self._queued[other]
            if now:
                self._queued[other] = now
            else:
                del self._queued[other]
        victims: list[C] = []
        while self.queued_total > self._max_queued and self._queued:
            worst = max(self._queued, key=self._queued.__getitem__)
            self.queued_total -= self._queued.pop(worst)
            victims.append(worst)
        return tuple(victims)
