"""Private address ranges: dnsmasq's ``bogus-priv`` and ``stop-dns-rebind``, without I/O.

- ``--bogus-priv``: a PTR question for an address of :data:`PRIVATE`
  (RFC 6303's locally served zones, plus deprecated site-local IPv6) is
  answered NXDOMAIN by the gateway instead of leaking to the upstreams,
  unless a ``--server`` or ``--rev-server`` rule covers its name. A reverse
  name of a network (``16.172.in-addr.arpa``) counts as its first address,
  as in dnsmasq (:func:`reverse_name_address`).
- ``--stop-dns-rebind``: an upstream answer whose answer section holds an
  A or AAAA record in :data:`PRIVATE` is replaced by an empty
  NOERROR (what dnsmasq 2.90 sends, checked against it), so a page on the
  internet cannot make a browser reach hosts of the local network (DNS
  rebinding); names under the Consul domains and ``--rebind-domain-ok``
  are exempt.

One list serves both, as in dnsmasq 2.90 (checked against it: it covers
neither CGNAT space, RFC 6598, nor fc00::/8).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from gateway.dns import wire

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# RFC 6303 sections 4.1-4.6: the zones every resolver should serve itself;
# the same list is dnsmasq 2.90's for rebinding protection.
PRIVATE: tuple[_V4 | _V6, ...] = (
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
    _V6("fec0::/10"),  # site-local, deprecated (RFC 3879)
    _V6("2001:db8::/32"),
)
_PRIVATE_V4 = tuple(n for n in PRIVATE if isinstance(n, _V4))
_PRIVATE_V6 = tuple(n for n in PRIVATE if isinstance(n, _V6))
_SECTION_COUNTS = struct.Struct("!HHH")
_IN_ADDR: Final = b"\x07in-addr\x04arpa\x00"
_IP6: Final = b"\x03ip6\x04arpa\x00"
_HEX = frozenset(b"0123456789abcdef")


def reverse_name_address(
    qname_wire: bytes,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The first address a reverse name (RFC 1035 3.5, RFC 3596 2.5) covers, or None.

    ``qname_wire`` is lower-case wire form. A name of a network
    (``16.172.in-addr.arpa``: fewer than 4 octets or 32 nibbles) gives the
    network's first address; a name that is no reverse name, or the bare
    ``in-addr.arpa``/``ip6.arpa``, gives None.
    """
    if qname_wire.endswith(_IN_ADDR):
        body, width, most = qname_wire[: -len(_IN_ADDR)], 8, 4
    elif qname_wire.endswith(_IP6):
        body, width, most = qname_wire[: -len(_IP6)], 4, 32
    else:
        return None
    labels: list[bytes] = []
    pos = 0
    while pos < len(body):
        size = body[pos]
        labels.append(body[pos + 1 : pos + 1 + size])
        pos += 1 + size
    if not 1 <= len(labels) <= most:
        return None
    value = 0
    for label in reversed(labels):  # most significant first
        if width == 8:
            if not label.isdigit() or len(label) > 3 or int(label) > 255:
                return None
            part = int(label)
        else:
            if len(label) != 1 or label[0] not in _HEX:
                return None
            part = int(label, 16)
        value = value << width | part
    value <<= width * (most - len(labels))
    return ipaddress.IPv4Address(value) if width == 8 else ipaddress.IPv6Address(value)


def is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for :data:`PRIVATE`: ``--bogus-priv`` answers its reverse names,
    ``--stop-dns-rebind`` keeps it out of upstream answers (an IPv4-mapped
    IPv6 address counts as its IPv4 address)."""
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in net for net in _PRIVATE_V4)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return is_private(mapped)
    return any(address in net for net in _PRIVATE_V6)


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
        if is_private(address):
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
