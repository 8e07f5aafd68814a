"""What an upstream's reply is worth: one verdict per message, no I/O.

The forwarder has already matched the message to a query it sent (source
address and port, socket, ID); :func:`classify` decides the rest. Only a
reply that ends the question -- an :attr:`Verdict.ANSWER`, or an
:attr:`Verdict.ERROR` relayed when every upstream failed -- is ever handed
on, and both have passed ``verify.walk_strict`` with our question: nothing
that does not parse reaches the cache or a client.
"""

from __future__ import annotations

import enum

from gateway.dns import verify, wire

# Answers that say "ask someone else" (RFC 1035 4.1.1, RFC 8914's intent):
# the forwarder moves on to the next upstream.
RETRY_RCODES = frozenset({wire.SERVFAIL, wire.REFUSED, wire.NOTIMP, wire.FORMERR})
_OPCODE_BITS = 0x78  # in the first flag byte


class Verdict(enum.Enum):
    """What the forwarder does with a reply."""

    ANSWER = "answer"  # whole, our question: the result
    TRUNCATED = "truncated"  # TC over UDP, our question: ask the same upstream over TCP
    ERROR = "error"  # whole, our question, SERVFAIL/REFUSED/NOTIMP/FORMERR: next upstream
    MALFORMED = "malformed"  # from the upstream but unusable: next upstream
    NOT_OURS = "not ours"  # a response to something else (RFC 5452): ignored, keep waiting


def classify(data: bytes, question: bytes, *, tcp: bool = False) -> Verdict:
    """The verdict on ``data``, an upstream's reply to ``question``.

    ``question`` is the lower-case qname wire + qtype + qclass that was
    sent. A truncated UDP reply needs only its header and question: it is
    neither cached nor relayed, and servers cut it anywhere. Over TCP there
    is nothing larger to ask for, so TC there is MALFORMED.
    """
    if len(data) < wire.HEADER_LEN or not data[2] & 0x80:
        return Verdict.NOT_OURS  # not a response at all (a query reflected back, noise)
    qdcount = (data[4] << 8) | data[5]
    end = wire.HEADER_LEN + len(question)
    # The name compares without letter case (0x20 from upstreams); type and
    # class byte for byte: lower-casing them would turn type 65 (HTTPS, 0x0041)
    # into 97 and throw the real reply away as spoofed.
    if qdcount == 1 and (
        data[wire.HEADER_LEN : end - 4].lower() != question[:-4]
        or data[end - 4 : end] != question[-4:]
    ):
        return Verdict.NOT_OURS  # another question: a spoofing attempt or a late reply
    if qdcount != 1 or data[2] & _OPCODE_BITS:
        return Verdict.MALFORMED  # our ID and address, but not an answer to a QUERY
    if data[2] & 0x02:
        return Verdict.MALFORMED if tcp else Verdict.TRUNCATED
    try:
        layout = verify.walk_strict(data)
    except wire.FormatError:
        return Verdict.MALFORMED
    opt = [r for r in layout.additional if r.rtype == wire.OPT]
    if opt and opt[0].ttl >> 24:
        # An extended rcode (RFC 6891 6.1.3): we sent version 0 and no
        # cookie, and the upper bits would be lost with the upstream's OPT.
        return Verdict.MALFORMED
    if data[3] & 0x0F in RETRY_RCODES:
        return Verdict.ERROR
    return Verdict.ANSWER
