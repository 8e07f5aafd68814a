"""CHAOS-class questions about the server itself, answered here, never forwarded.

Forwarded, ``version.bind CH TXT`` and ``hostname.bind CH TXT`` would tell
any client the upstream's software and host name. As BIND and Unbound do,
the gateway answers these names itself:

- ``version.bind``, ``version.server``: ``consul-dns-gateway <version>``;
- ``hostname.bind``, ``id.server``: this machine's host name. Unbound
  answers both with its ``identity``, which defaults to the host name
  (BIND: ``hostname.bind`` is the host name, ``id.server`` is off until
  ``server-id`` is set); one answer for both is what a client probing
  which of several anycast gateways answered needs (RFC 4892), and an
  operator who wants neither told uses ``--chaos refuse``.

Each name is its own zone, as in BIND: TXT (or ANY) gets the TXT record,
another type NODATA with the zone's SOA, a name below it NXDOMAIN with the
SOA. Any other CHAOS or Hesiod question is REFUSED, as BIND refuses a class
it has no zone for; ``--chaos refuse`` refuses them all.
"""

from __future__ import annotations

import importlib.metadata
import socket
import struct

from gateway.catalog.answers import txt_rdata
from gateway.dns import wire
from gateway.dns.codec import Answer, Record
from gateway.server import rcodes

CLASS_CH = 3
CLASS_HS = 4
# The classes this module answers instead of the forwarder.
CLASSES = frozenset({CLASS_CH, CLASS_HS})
PACKAGE = "consul-dns-gateway"
# TTL of the answers (BIND's built-in CHAOS zones use 0: never cached).
CHAOS_TTL = 0
# BIND's SOA timers for its built-in CHAOS zones: refresh, retry, expire, minimum.
_SOA_TIMERS = struct.pack("!IIIII", 0, 28800, 7200, 604800, 86400)
VERSION_NAMES = ("version.bind.", "version.server.")
IDENTITY_NAMES = ("hostname.bind.", "id.server.")


def version_text() -> str:
    try:
        return f"{PACKAGE} {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return f"{PACKAGE} (source)"


class ChaosAnswerer:
    """Answers CH/HS questions; raises ``rcodes.Refused`` for the rest."""

    def __init__(self, action: str, *, version: str | None = None, identity: str | None = None):
        self._refuse = action == "refuse"
        texts = dict.fromkeys(VERSION_NAMES, version or version_text())
        texts.update(dict.fromkeys(IDENTITY_NAMES, identity or socket.gethostname()))
        self._texts = {wire.to_wire(name): txt_rdata(text) for name, text in texts.items()}

    def answer(self, query: wire.Query) -> Answer:
        if self._refuse or query.qclass != CLASS_CH:
            raise rcodes.Refused()
        name = query.qname_wire.lower()
        found = wire.longest_suffix(name, self._texts)
        if found is None:
            raise rcodes.Refused()
        pos, text = found
        return self._from_zone(name, pos, text, query.qtype)

    @staticmethod
    def _from_zone(name: bytes, pos: int, text: bytes, qtype: int) -> Answer:
        apex = name[pos:]
        if pos == 0 and qtype in (wire.TXT, wire.ANY):
            return Answer(wire.NOERROR, answer=(Record(apex, wire.TXT, CHAOS_TTL, text, CLASS_CH),))
        soa = Record(
            apex, wire.SOA, CHAOS_TTL, apex + b"\x0ahostmaster" + apex + _SOA_TIMERS, CLASS_CH
        )
        return Answer(wire.NOERROR if pos == 0 else wire.NXDOMAIN, authority=(soa,))
