"""Writes the seed inputs of the fuzz corpus (``python -m tests.fuzz.seeds``).

Seeds are made with dnspython: queries with and without EDNS, DO, odd types
and classes, compression where it is allowed, EDNS options; for the upstream
target, well-formed replies of every kind to each client question. The
fuzzer finds the rest; inputs it found worth keeping are added to the
corpus by ``python -m tests.fuzz TARGET --merge``, and inputs that once
broke an invariant are kept by hand as ``regress-*`` files.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rdata
import dns.rrset

from tests.fuzz import world

CORPUS = Path(__file__).resolve().parent / "corpus"


def _query(name: str, rdtype: str, **kw: object) -> dns.message.QueryMessage:
    msg = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    msg.id = 0xBEEF
    return msg


def queries() -> Iterator[tuple[str, bytes]]:
    """Client packets: the world's questions, then the unusual ones."""
    questions = world.LOCAL_QUESTIONS + world.FORWARDED_QUESTIONS
    for i, (name, rdtype) in enumerate(questions):
        payload, do = world.EDNS_STATES[i % len(world.EDNS_STATES)]  # one state each
        yield f"client-{i:02d}", world.Client(name, rdtype, payload, do).packet()
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    yield (
        "edns-options",
        _query("web.service.consul.", "A", use_edns=0, options=[cookie, ecs]).to_wire(),
    )
    yield "edns-version-1", _query("web.service.consul.", "A", use_edns=1).to_wire()
    yield "edns-payload-100", _query("www.example.com.", "A", use_edns=0, payload=100).to_wire()
    yield "type-65", _query("www.example.com.", "TYPE65").to_wire()
    yield "type-97", _query("www.example.com.", "TYPE97").to_wire()
    yield "class-chaos", _query("version.bind.", "TXT", rdclass="CH").to_wire()
    yield "class-any", _query("web.service.consul.", "A", rdclass="ANY").to_wire()
    yield "axfr", _query("home.arpa.", "AXFR").to_wire()
    yield "mixed-case", _query("wEb.SeRvIcE.cOnSuL.", "SRV", use_edns=0).to_wire()
    yield "escaped-dot", _query("a\\.b.service.consul.", "A").to_wire()
    yield "long-name", _query(".".join(["x" * 63] * 3) + ".example.com.", "A").to_wire()
    notify = _query("home.arpa.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notify.answer.append(dns.rrset.from_text("home.arpa.", 60, "IN", "SOA",
                                             "ns.home.arpa. h.home.arpa. 2 1 1 1 1"))  # fmt: skip
    yield "notify-with-answer", notify.to_wire()
    update = _query("home.arpa.", "SOA")
    update.set_opcode(dns.opcode.UPDATE)
    yield "update", update.to_wire()
    # Compression in the additional section (an owner pointing at the question).
    base = _query("www.example.com.", "A").to_wire()
    additional = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\xc0\x00\x02\x01"
    yield "additional-compressed", base[:10] + b"\x00\x01" + base[12:] + additional
    yield "two-questions", base[:4] + b"\x00\x02" + base[6:] + base[12:]
    yield "response-bit", base[:2] + bytes((base[2] | 0x80,)) + base[3:]
    yield "header-only", base[:12]
    yield "short", base[:5]
    yield "trailing-byte", base + b"\x00"
    yield "pointer-in-question", base[:12] + b"\xc0\x0c" + base[-4:]


def upstream_inputs() -> Iterator[tuple[str, bytes]]:
    """Control bytes + a well-formed reply, for the upstream target."""
    for i, client in enumerate(world.UPSTREAM_CLIENTS):
        kinds = world.REPLY_KINDS if i < 4 else ("answer",)
        for kind in kinds:
            reply = world.upstream_reply(client.question(), client.do, kind)
            yield f"client-{i}-{kind}", bytes((i, 0x01)) + reply
    www = world.UPSTREAM_CLIENTS[0]
    reply = world.upstream_reply(www.question(), False, "answer")
    truncated = reply[:2] + bytes((reply[2] | 0x02,)) + reply[3:]
    yield "tc-then-tcp", bytes((0, 0x03)) + truncated
    yield "tc-tcp-closed", bytes((0, 0x00)) + truncated
    yield "tc-client-tcp", bytes((0x10, 0x03)) + truncated
    yield "second-upstream-good", bytes((1, 0x0D)) + reply[:7]
    message = dns.message.from_wire(reply)
    message.use_edns(False)
    yield "no-opt", bytes((1, 0x01)) + message.to_wire()


def upstream_regressions() -> Iterator[tuple[str, bytes]]:
    """Hand-made upstream replies that broke an invariant on 901fc25 (issue 9)."""
    www = world.UPSTREAM_CLIENTS[1]  # EDNS 1232
    message = dns.message.from_wire(world.upstream_reply(www.question(), False, "answer"))
    message.use_edns(False)
    # A valid reply (from an upstream without EDNS) with trailing bytes:
    # cached, then served unparseable to EDNS clients.
    yield "trailing-bytes", bytes((1, 0x01)) + message.to_wire() + b"\x00\x00\x00"
    # A well-formed reply the template code cannot take (OPT not the last
    # additional record), 40 A records: relayed raw, ~700 bytes to a client
    # that takes 512.
    plain = world.UPSTREAM_CLIENTS[0]  # no EDNS: 512 bytes
    message = dns.message.from_wire(world.upstream_reply(plain.question(), False, "answer"))
    rrset = message.answer[0]
    for i in range(40):
        rrset.add(dns.rdata.from_text("IN", "A", f"192.0.2.{i + 100}"))
    message.use_edns(False)
    body = message.to_wire()
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\xc0\x00\x02\x07"
    arcount = struct.pack("!H", 2)
    yield "oversize-raw-relay", bytes((0, 0x01)) + body[:10] + arcount + body[12:] + opt + extra


def write() -> int:
    sets = {
        "query": list(queries()),
        "fastpath": [],
        "slowpath": [],
        "upstream": list(upstream_inputs()),
        "upstream-regress": list(upstream_regressions()),
    }
    # Fast- and slow-path inputs: a control byte, then a query.
    for name, packet in sets["query"]:
        sets["fastpath"].append((f"{name}-udp", b"\x00" + packet))
        sets["slowpath"].append((f"{name}-udp", b"\x00" + packet))
    for name, packet in sets["query"][::7]:
        sets["fastpath"].append((f"{name}-tcp-aged", b"\x03" + packet))
        sets["slowpath"].append((f"{name}-tcp-big", b"\x03" + packet))
    count = 0
    for target, inputs in sets.items():
        target, _, prefix = target.partition("-")
        prefix = prefix or "seed"
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{prefix}-*"):
            if prefix == "seed" or old.name.removeprefix("regress-") in dict(inputs):
                old.unlink()
        for name, data in inputs:
            (folder / f"{prefix}-{name}").write_bytes(data)
            count += 1
    return count


if __name__ == "__main__":
    print(f"{write()} seeds written under {CORPUS}")
    sys.exit(0)
