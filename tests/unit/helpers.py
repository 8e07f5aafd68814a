"""Builders shared by the unit tests (no sockets)."""

from __future__ import annotations

import dns.message

from gateway.dns import wire


def query_bytes(name: str, rdtype: str = "A", *, edns: int | bool = False, do: bool = False,
                msg_id: int = 4660) -> bytes:  # fmt: skip
    msg = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=do)
    msg.id = msg_id
    return msg.to_wire()


def parsed(name: str, rdtype: str = "A", **kw: object) -> wire.Query:
    return wire.parse_query(query_bytes(name, rdtype, **kw))  # type: ignore[arg-type]
