"""Hosts files (``/etc/hosts``, dnsmasq's ``addn-hosts``) as values; no I/O.

The format of hosts(5): an address, then one or more names, separated by
blanks; ``#`` starts a comment. A line dnsmasq would reject is skipped with
a warning that names the file and the line, and the rest of the file is
still served (dnsmasq logs "bad address at FILE line N" and goes on).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# RFC 1035 2.3.4: 63 bytes per label, 255 per name in wire form (253 as text).
MAX_LABEL_LEN = 63
MAX_NAME_TEXT_LEN = 253
# What dnsmasq accepts in a host name (its canonicalise(): letters, digits,
# '-', '_' and the dots between labels).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True, slots=True)
class HostsLine:
    """One usable line: an address and its names (lower case, no final dot)."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    names: tuple[str, ...]
    line: int


def parse(text: str, source: str) -> tuple[list[HostsLine], list[str]]:
    """The usable lines of a hosts file and a warning per line or name skipped.

    ``source`` names the file in the warnings.
    """
    lines: list[HostsLine] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            # No scope (fe80::1%eth0): a DNS record cannot carry one (dnsmasq rejects it too).
            if "%" in fields[0]:
                raise ValueError(fields[0])
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            warnings.append(f"bad address at {source} line {number}")
            continue
        names: list[str] = []
        for text_name in fields[1:]:
            name = valid_name(text_name)
            if name is None:
                warnings.append(f"bad name at {source} line {number}: {text_name[:80]!r}")
                continue
            names.append(name)
        if not fields[1:]:
            warnings.append(f"no name at {source} line {number}")
        if names:
            lines.append(HostsLine(address, tuple(names), number))
    return lines, warnings


def valid_name(text: str) -> str | None:
    """``text`` as a lower-case host name without the final dot, or None if invalid."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_TEXT_LEN or not set(name) <= _NAME_CHARS:
        return None
    if any(not label or len(label) > MAX_LABEL_LEN for label in name.split(".")):
        return None
    return name
