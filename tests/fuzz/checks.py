"""The invariants the fuzz targets hold the gateway to.

A violation raises :class:`Violation` with a short message that names the
invariant (not the input), so the runner can group findings by message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import dns.message

from gateway.cache.store import BASE, WIRE, ForwardCache, entry_bytes
from gateway.dns import wire


class Violation(AssertionError):
    """An invariant does not hold for this input."""


def client_limit(packet: bytes, tcp: bool, max_udp: int) -> int:
    """The largest reply ``packet``'s sender accepts (RFC 1035 4.2.1, RFC 6891 6.2.5)."""
    if tcp:
        return wire.TCP_LIMIT
    try:
        query = wire.parse_query(packet)
    except wire.FormatError:
        return wire.CLASSIC_UDP_LIMIT
    if query.edns is None:
        return wire.CLASSIC_UDP_LIMIT
    return min(max(query.edns.payload, wire.CLASSIC_UDP_LIMIT), max_udp)


def parse(message: bytes, what: str) -> dns.message.Message:
    """``message`` as dnspython reads it (what a stub resolver would do), or a Violation.

    Read as opcode QUERY whatever its opcode: dnspython reads an UPDATE by
    RFC 2136's rules for requests (a NOTIMP reply echoing an odd zone
    section is still a well-formed message). The last few results are kept:
    targets check the same answer for several clients.
    """
    if len(message) > 2 and message[2] & 0x78:
        message = message[:2] + bytes((message[2] & ~0x78,)) + message[3:]
    known = _PARSED.get(message)
    if known is None:
        try:
            known = dns.message.from_wire(message)
        except Exception as exc:  # whatever dnspython raises, a client would fail the same way
            known = exc
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        _PARSED[message] = known
    if isinstance(known, Exception):
        raise Violation(f"{what} does not parse: {type(known).__name__}") from known
    return known


# Messages parsed lately (a dnspython parse is ~0.1-2 ms).
_PARSED_KEPT = 64
_PARSED: dict[bytes, dns.message.Message | Exception] = {}


def check_reply(packet: bytes, reply: bytes, tcp: bool, max_udp: int, what: str) -> None:
    """A reply to ``packet`` parses, answers it (ID, QR, question) and fits the client."""
    message = parse(reply, what)
    if reply[:2] != packet[:2]:
        raise Violation(f"{what}: ID differs from the query's")
    if not reply[2] & 0x80:
        raise Violation(f"{what}: QR is not set")
    limit = client_limit(packet, tcp, max_udp)
    if len(reply) > limit:
        raise Violation(f"{what}: {len(reply)} bytes for a client that takes {limit}")
    try:
        query = wire.parse_query(packet)
    except wire.FormatError:
        return
    end = query.question_end
    if message.question and reply[wire.HEADER_LEN : end] != packet[wire.HEADER_LEN : end]:
        raise Violation(f"{what}: question differs from the query's")


def check_cache(
    cache: ForwardCache, keys: Iterable[bytes | None] | None = None, *, max_bytes: int | None = None
) -> None:
    """Nothing sits in the cache (or under ``keys``) that a client could not parse.

    Checking the whole cache (no ``keys``) also checks its byte count (issue 9):
    the sum over its entries, and within ``max_bytes`` when given.
    """
    entries = cache.entries
    if keys is None:
        if cache.bytes != sum(entry_bytes(key, entry) for key, entry in entries.items()):
            raise Violation("cache byte count differs from its entries")
        if max_bytes is not None and cache.bytes > max_bytes:
            raise Violation("cache holds more bytes than its bound")
    for key in entries if keys is None else keys:
        entry = entries.get(key) if key is not None else None
        if entry is not None:
            parse(entry[BASE], "cached template")
            parse(entry[WIRE], "cached template (aged)")


class ErrorLog(logging.Handler):
    """Collects log records at ERROR and above: a traceback is a finding too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def install(self) -> None:
        root = logging.getLogger()
        root.handlers = [self]
        root.setLevel(logging.WARNING)

    def check(self) -> None:
        if self.records:
            first = self.records[0]
            self.records.clear()
            kind = type(first.exc_info[1]).__name__ if first.exc_info else "no traceback"
            raise Violation(f"logged at {first.levelname}: {first.msg} ({kind})")
