"""Private address ranges: dnsmasq's ``bogus-priv`` and ``stop-dns-rebind``, without I/O.

- ``--bogus-priv``: a PTR question for an address of :data:`BOGUS_PRIV`
  (RFC 6303's locally served zones) is answered NXDOMAIN by the gateway
  instead of leaking to the upstreams, unless a ``--server`` or
  ``--rev-server`` rule covers its name.
- ``--stop-dns-rebind``: an upstream answer whose answer section holds an
  A or AAAA record in :func:`rebinding`'s ranges is replaced by an empty
  NOERROR (what dnsmasq 2.90 sends, checked against it), so a page on the
  internet cannot make a browser reach hosts of the local network (DNS
  rebinding); names under the Consul domains and ``--rebind-domain-ok``
  are exempt.

The two lists differ as dnsmasq's do (also checked against it): rebinding
protection also covers CGNAT space (RFC 6598); bogus-priv is RFC 6303's list.
"""

from __future__ import annotations

import ipaddress
import struct

from gateway.dns import wire

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# RFC 6303 sections 4.1-4.6: the zones every resolver should serve itself.
BOGUS_PRIV: tuple[_V4 | _V6, ...] = (
    _V4("0.0.0.0/8"),
    _V4("10.0.0.0/8"),
    _V4("127.0.0.0/8"),
    _V4("169.254.0.0/16"),
    _V4("172.16.0.0/12"),
    _V4("192.0.2.0/24"),
    _V4("192.168.0.0/16"),
    _V4("198.51.100.0/24"),
    _V4("203.0.113.0/24"),
    _V4("255.255.255.255/32"),
    _V6("::/128"),
    _V6("::1/128"),
    _V6("fd00::/8"),
    _V6("fe80::/10"),
    _V6("2001:db8::/32"),
)
# Addresses an internet name must not resolve to (rebinding): BOGUS_PRIV plus
# shared address space (RFC 6598) and deprecated site-local IPv6 (RFC 3879).
REBIND: tuple[_V4 | _V6, ...] = (
    *BOGUS_PRIV,
    _V4("100.64.0.0/10"),
    _V6("fec0::/10"),
)
_REBIND_V4 = tuple(n for n in REBIND if isinstance(n, _V4))
_REBIND_V6 = tuple(n for n in REBIND if isinstance(n, _V6))
_BOGUS_V4 = tuple(n for n in BOGUS_PRIV if isinstance(n, _V4))
_BOGUS_V6 = tuple(n for n in BOGUS_PRIV if isinstance(n, _V6))
_SECTION_COUNTS = struct.Struct("!HHH")


def is_bogus_priv(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when the reverse name of ``address`` is answered locally under ``--bogus-priv``."""
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in net for net in _BOGUS_V4)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return is_bogus_priv(mapped)
    return any(address in net for net in _BOGUS_V6)


def is_rebind_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address ``--stop-dns-rebind`` keeps out of upstream answers."""
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in net for net in _REBIND_V4)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return is_rebind_address(mapped)
    return any(address in net for net in _REBIND_V6)


def rebinding(response: bytes, layout: wire.Layout) -> bool:
    """True when an A or AAAA record of the answer section holds a private address."""
    for record in layout.answer:
        size = record.end - record.ttl_offset - 6  # TTL and RDLENGTH precede the rdata
        rdata = response[record.end - size : record.end]
        if record.rtype == wire.A and size == 4:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(rdata)
        elif record.rtype == wire.AAAA and size == 16:
            address = ipaddress.IPv6Address(rdata)
        else:
            continue
        if is_rebind_address(address):
            return True
    return False


def emptied(response: bytes, layout: wire.Layout) -> bytes:
    """``response`` as NOERROR with its question only (dnsmasq's reply to a rebinding answer)."""
    flags = response[3] & 0x90  # RA and CD as they were; no AD, rcode NOERROR
    return (
        response[:3]
        + bytes((flags,))
        + response[4:6]
        + _SECTION_COUNTS.pack(0, 0, 0)
        + response[wire.HEADER_LEN : layout.question_end]
    )
