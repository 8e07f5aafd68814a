"""Builders shared by the unit tests (no sockets)."""

from __future__ import annotations

import dns.message
import dns.name

from gateway.dns import wire


def query_bytes(name: str, rdtype: str = "A", *, edns: int | bool = False, do: bool = False,
                msg_id: int = 4660) -> bytes:  # fmt: skip
    msg = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=do)
    msg.id = msg_id
    return msg.to_wire()


def parsed(name: str, rdtype: str = "A", **kw: object) -> wire.Query:
    return wire.parse_query(query_bytes(name, rdtype, **kw))  # type: ignore[arg-type]


def name_text(name_wire: bytes) -> str:
    """Lower-case text of an uncompressed wire name, without the final dot."""
    return str(dns.name.from_wire(name_wire, 0)[0].to_text(omit_final_dot=True)).lower()
