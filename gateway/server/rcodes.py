"""Every failure that ends a query, mapped to its response code in one place.

Answerers and the request path raise; :func:`rcode_for` decides the rcode
and :func:`error_reply` builds the message (with the one rule for when an
OPT record goes with it). Nothing else in the gateway turns an exception
into an rcode.
"""

from __future__ import annotations

from gateway.catalog.source import CatalogUnavailable
from gateway.dns import wire


class NotImplementedOpcode(Exception):
    """Opcodes other than QUERY (RFC 1035 4.1.1: NOTIMP)."""


class BadVersion(Exception):
    """EDNS version above 0 (RFC 6891 6.1.3: BADVERS)."""


class Refused(Exception):
    """A question we will not answer (zone transfers, odd classes)."""


class NotAllowed(Exception):
    """A client outside --allow, or outside --allow-recursion for a forwarded name."""


class UpstreamFailure(Exception):
    """Every upstream failed and nothing stale was left."""


# Failures that are answers, not bugs: no traceback is logged for them.
_EXPECTED: dict[type[BaseException], int] = {
    wire.FormatError: wire.FORMERR,
    NotImplementedOpcode: wire.NOTIMP,
    BadVersion: wire.BADVERS,
    Refused: wire.REFUSED,
    NotAllowed: wire.REFUSED,
    CatalogUnavailable: wire.SERVFAIL,
    UpstreamFailure: wire.SERVFAIL,
    TimeoutError: wire.SERVFAIL,  # a catalog fetch that took too long
}


def rcode_for(exc: BaseException) -> int:
    """The response code for a failure; SERVFAIL for anything unforeseen (bugs)."""
    for kind, rcode in _EXPECTED.items():
        if isinstance(exc, kind):
            return rcode
    return wire.SERVFAIL


def is_expected(exc: BaseException) -> bool:
    """True for failures that are ordinary answers; False for bugs worth a traceback."""
    return isinstance(exc, tuple(_EXPECTED))


# The counters (``gateway.metrics``) of packets that get no reply at all.
DROPPED_SHORT = "dropped_short"
DROPPED_RESPONSE = "dropped_responses"


def drop_reason(packet: bytes) -> str | None:
    """The counter to count ``packet`` in when it gets no reply at all, else None.

    A response (QR=1) is never answered (RFC 1035 4.1.1 defines QR=1 as a
    response; BIND, Unbound, Knot and dnsmasq all drop them): an error reply
    is itself a response, so two servers -- or one server and its own
    address -- would bounce one forged packet between them forever. A packet
    shorter than the 12-byte header has no header to answer with.
    """
    if len(packet) < wire.HEADER_LEN:
        return DROPPED_SHORT
    if packet[2] & (wire.FLAG_QR >> 8):
        return DROPPED_RESPONSE
    return None


def error_reply(
    query: bytes, rcode: int, *, client_edns: bool, payload: int, do: bool = False
) -> bytes:
    """The error message for ``query`` (b"" when it has no ID to answer to).

    RFC 6891 6.1.3: an extended rcode (above 15) needs an OPT record for its
    upper bits, so it gets one even when the client sent none; otherwise
    the OPT goes only to clients that sent one, with their DO bit (``do``)
    echoed as in every other answer (RFC 3225 3).
    """
    with_opt = client_edns or rcode > 15
    return wire.error_response(query, rcode, edns_payload=payload if with_opt else None, do=do)
