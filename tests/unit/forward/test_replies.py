"""The verdict on an upstream's reply, one message at a time (no sockets)."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from gateway.dns import verify
from gateway.forward.replies import Verdict, classify

QUESTION = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"


def reply(
    name: str = "www.example.com.",
    *,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    tc: bool = False,
    records: int = 1,
) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if tc:
        r.flags |= dns.flags.TC
    if records:
        addresses = [f"192.0.2.{i}" for i in range(1, records + 1)]
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *addresses))
    return r.to_wire(max_size=65535)


def edited(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes((value,)) + data[at + 1 :]


def extended_rcode(data: bytes) -> bytes:
    """The reply with upper rcode bits in its OPT record (the OPT is last)."""
    opt_ttl = len(data) - 6  # root owner, type, class; then the TTL's first byte
    return edited(data, opt_ttl, 1)


CASES = {
    "answer": (reply(), False, Verdict.ANSWER),
    "answer over TCP": (reply(), True, Verdict.ANSWER),
    "NXDOMAIN": (reply(rcode=dns.rcode.NXDOMAIN, records=0), False, Verdict.ANSWER),
    "name in other letter case": (reply("WWW.Example.COM."), False, Verdict.ANSWER),
    "SERVFAIL": (reply(rcode=dns.rcode.SERVFAIL, records=0), False, Verdict.ERROR),
    "REFUSED": (reply(rcode=dns.rcode.REFUSED, records=0), False, Verdict.ERROR),
    "TC": (reply(tc=True, records=0), False, Verdict.TRUNCATED),
    "TC cut mid-record": (reply(tc=True, records=3)[:-20], False, Verdict.TRUNCATED),
    "TC over TCP": (reply(tc=True, records=0), True, Verdict.MALFORMED),
    "trailing bytes": (reply() + b"\x00", False, Verdict.MALFORMED),
    "SERVFAIL with trailing bytes": (
        reply(rcode=dns.rcode.SERVFAIL, records=0) + b"junk",
        False,
        Verdict.MALFORMED,
    ),
    "record cut short": (reply()[:-3], False, Verdict.MALFORMED),
    "no question (FORMERR)": (
        reply(rcode=dns.rcode.FORMERR, records=0)[:4] + b"\x00\x00" * 4,
        False,
        Verdict.MALFORMED,
    ),
    "two questions": (edited(reply(), 5, 2), False, Verdict.MALFORMED),
    "opcode NOTIFY": (edited(reply(), 2, 0x80 | 0x20), False, Verdict.MALFORMED),
    "extended rcode": (extended_rcode(reply()), False, Verdict.MALFORMED),
    "a query echoed back (QR=0)": (edited(reply(), 2, 0x01), False, Verdict.NOT_OURS),
    "another question": (reply("ftp.example.com."), False, Verdict.NOT_OURS),
    "another question over TCP": (reply("ftp.example.com."), True, Verdict.NOT_OURS),
    "shorter than a header": (reply()[:11], False, Verdict.NOT_OURS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verdict(case: str) -> None:
    data, tcp, verdict = CASES[case]
    assert classify(data, QUESTION, tcp=tcp) is verdict


def test_any_bytes_get_a_verdict_and_only_whole_answers_are_answers() -> None:
    """5,000 mutated replies: classify never raises, and what it calls an answer or an
    error passed the strict walk (the forwarder hands on nothing else)."""
    rng = random.Random(9)
    bases = [reply(), reply(records=20), reply(rcode=dns.rcode.SERVFAIL, records=0), reply(tc=True)]
    seen = set()
    for _ in range(5_000):
        buf = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(buf))
            if rng.random() < 0.7:
                buf[at] = rng.randrange(256)
            else:
                del buf[at:]
                if not buf:
                    break
        data = bytes(buf)
        verdict = classify(data, QUESTION, tcp=rng.random() < 0.5)
        seen.add(verdict)
        if verdict in (Verdict.ANSWER, Verdict.ERROR):
            verify.walk_strict(data)
            assert data[12 : 12 + len(QUESTION)].lower() == QUESTION
    assert seen == set(Verdict)


def test_every_qtype_and_qclass_matches_its_own_reply() -> None:
    """Issue 8: type and class bytes were lower-cased with the name, so replies to
    types 65-90 (HTTPS among them) and types with a high byte of 0x41-0x5A were
    ignored as spoofed. All 65,536 types, and every class byte pattern."""
    name = b"\x03WwW\x07Example\x03com\x00"  # the upstream echoes 0x20 case
    header = b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00"
    for value in range(65536):
        two = value.to_bytes(2, "big")
        for question_tail in (two + b"\x00\x01", b"\x00\x01" + two):  # qtype, then qclass
            question = name.lower() + question_tail
            reply = header + name + question_tail
            assert classify(reply, question) is Verdict.ANSWER, (value, question_tail)
            # ... and never another type's or class's reply.
            other = (value ^ 0x20).to_bytes(2, "big")
            wrong_tail = question_tail.replace(two, other, 1)
            assert classify(header + name + wrong_tail, question) is Verdict.NOT_OURS
