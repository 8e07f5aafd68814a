"""Names answered locally per RFC 6761 even without a hosts file.

``localhost.`` and every name below it (RFC 6761 6.3: "caching DNS servers
SHOULD ... generate immediate positive responses for IPv4 address queries
with 127.0.0.1 and IPv6 address queries with ::1, negative responses for
other types"), and the reverse names of the loopback addresses: the zone
``127.in-addr.arpa.`` (RFC 6303 4.2, a locally served zone) with
``1.0.0.127.in-addr.arpa. PTR localhost.``, and the reverse name of ``::1``.
Shaped like Unbound's built-in local zones (``localhost.`` with its SOA and
NS, the loopback reverse zones "static"): negative answers carry the SOA, so
they are cacheable (RFC 2308), and nothing here is ever forwarded.

Hosts-file lines for loopback addresses (Debian's ``127.0.1.1 myhost``) go
into these zones, so their reverse names exist and other types get NODATA.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import dns.reversename

from gateway.dns import wire
from gateway.zones import zone as zones

LOCALHOST = "localhost."
# RFC 6303 4.2 and the reverse name of ::1 (RFC 6303 4.3).
LOOPBACK_V4_ZONE = "127.in-addr.arpa."
LOOPBACK_V6_ZONE = dns.reversename.from_address("::1").to_text()
# Unbound's localhost SOA: serial 1, refresh 3600, retry 1200, expire 604800.
_SOA_TIMERS = "1 3600 1200 604800"
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _reverse(address: Address) -> str:
    return str(dns.reversename.from_address(str(address)).to_text())


def _head(origin: str, ttl: int) -> list[str]:
    return [
        f"$TTL {ttl}",
        f"{origin} SOA localhost. nobody.invalid. {_SOA_TIMERS} {ttl}",
        f"{origin} NS localhost.",
    ]


def build(ttl: int, ptr: Mapping[Address, str] | None = None) -> dict[bytes, zones.Zone]:
    """The three zones by their apex in lower-case wire form.

    ``ptr``: the hosts files' name for an address (first name of its first
    line); the loopback ones become PTR records here, ``127.0.0.1`` and
    ``::1`` default to ``localhost.``.
    """
    names: dict[Address, str] = {
        ipaddress.ip_address("127.0.0.1"): "localhost",
        _LOOPBACK_V6: "localhost",
    }
    names.update(ptr or {})
    v4 = _head(LOOPBACK_V4_ZONE, ttl)
    v6 = _head(LOOPBACK_V6_ZONE, ttl)
    for address, name in names.items():
        if address.version == 4 and address in _LOOPBACK_V4:
            v4.append(f"{_reverse(address)} PTR {name}.")
        elif address == _LOOPBACK_V6:
            v6.append(f"{_reverse(address)} PTR {name}.")
    localhost = _head(LOCALHOST, ttl)
    # The wildcard answers every name below localhost. (RFC 4592).
    for owner in (LOCALHOST, f"*.{LOCALHOST}"):
        localhost += [f"{owner} A 127.0.0.1", f"{owner} AAAA ::1"]
    built = {
        LOCALHOST: zones.from_text("\n".join(localhost) + "\n", LOCALHOST),
        LOOPBACK_V4_ZONE: zones.from_text("\n".join(v4) + "\n", LOOPBACK_V4_ZONE),
        LOOPBACK_V6_ZONE: zones.from_text("\n".join(v6) + "\n", LOOPBACK_V6_ZONE),
    }
    return {wire.to_wire(origin): zone for origin, zone in built.items()}
