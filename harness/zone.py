"""The test zone ``example.test.`` that Knot serves, as data.

Owns the records and the names tests and the benchmark refer to: the zone file is
generated from ``ZONE_RECORDS``, so callers import the same constants the file was
written from instead of repeating literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ZONE = "example.test."
DEFAULT_TTL = 300
# The SOA's own TTL is deliberately larger than its MINIMUM field so a test can
# tell which one a cache used: RFC 2308 says negative answers live for
# min(SOA TTL, MINIMUM), i.e. NEGATIVE_TTL.
SOA_TTL = 3600
SOA_MINIMUM = 60
NEGATIVE_TTL = min(SOA_TTL, SOA_MINIMUM)
SOA_SERIAL = 1

NS_NAME = "ns1." + ZONE
NS_A = "192.0.2.53"

WWW = "www." + ZONE
WWW_A = "192.0.2.10"
WWW_AAAA = "2001:db8::10"
WWW_TTL = 300

MAIL = "mail." + ZONE
MAIL_A = "192.0.2.25"
MX_PREFERENCE = 10

# alias -> alias2 -> www, all inside the zone, so Knot returns the whole chain
# plus the final A/AAAA in one answer.
ALIAS = "alias." + ZONE
ALIAS2 = "alias2." + ZONE

# Eight distinct 100-character strings: ~950 bytes on the wire, which is more
# than the 512 bytes of plain UDP (forces TC=1 without EDNS) but less than the
# 1232-byte EDNS payload tests use, so EDNS answers arrive whole over UDP.
BIGTXT = "bigtxt." + ZONE
BIGTXT_STRINGS: tuple[str, ...] = tuple(
    f"txt{i}-".ljust(100, "abcdefghijklmnopqrstuvwxyz"[i]) for i in range(8)
)

V4ONLY = "v4only." + ZONE  # A only: AAAA gives NODATA
V4ONLY_A = "192.0.2.40"

SHORT = "short." + ZONE  # for expiry tests without long sleeps
SHORT_A = "192.0.2.50"
SHORT_TTL = 2

MISSING = "does-not-exist." + ZONE  # any name not listed gives NXDOMAIN


@dataclass(frozen=True)
class ZoneRecord:
    """One resource record of the test zone, ``rdata`` in zone-file syntax."""

    name: str  # absolute owner name
    rdtype: str
    rdata: str
    ttl: int = DEFAULT_TTL

    def zone_line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rdtype} {self.rdata}"


def _txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


ZONE_RECORDS: tuple[ZoneRecord, ...] = (
    ZoneRecord(
        ZONE,
        "SOA",
        f"{NS_NAME} hostmaster.{ZONE} {SOA_SERIAL} 3600 900 604800 {SOA_MINIMUM}",
        SOA_TTL,
    ),
    ZoneRecord(ZONE, "NS", NS_NAME),
    ZoneRecord(NS_NAME, "A", NS_A),
    ZoneRecord(ZONE, "MX", f"{MX_PREFERENCE} {MAIL}"),
    ZoneRecord(WWW, "A", WWW_A, WWW_TTL),
    ZoneRecord(WWW, "AAAA", WWW_AAAA, WWW_TTL),
    ZoneRecord(MAIL, "A", MAIL_A),
    ZoneRecord(ALIAS, "CNAME", ALIAS2),
    ZoneRecord(ALIAS2, "CNAME", WWW),
    *(ZoneRecord(BIGTXT, "TXT", _txt(s)) for s in BIGTXT_STRINGS),
    ZoneRecord(V4ONLY, "A", V4ONLY_A),
    ZoneRecord(SHORT, "A", SHORT_A, SHORT_TTL),
)


def zone_file_text(records: Sequence[ZoneRecord] = ZONE_RECORDS) -> str:
    """The zone file for ``records`` (absolute names, so no $ORIGIN subtleties)."""
    return "".join(r.zone_line() + "\n" for r in records)
