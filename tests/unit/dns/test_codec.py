from __future__ import annotations

import dns.message

from gateway.dns import codec, wire

QUESTION = wire.to_wire("s.consul") + b"\x00\x21\x00\x01"


def srv_answer(count: int) -> codec.Answer:
    owner = wire.to_wire("s.consul")
    answer, extra = [], []
    for i in range(count):
        target = wire.to_wire(f"node{i}.node.dc1.consul")
        answer.append(codec.Record(owner, wire.SRV, 0, b"\x00\x01\x00\x01\x00\x50" + target))
        extra.append(codec.Record(target, wire.A, 0, bytes([10, 0, 0, i])))
    return codec.Answer(0, answer=tuple(answer), additional=tuple(extra))


def test_render_sets_counts_flags_and_opt() -> None:
    msg = codec.render(QUESTION, srv_answer(2), edns=wire.Edns(4096, 0, True), payload=1232)
    parsed = dns.message.from_wire(msg)
    assert parsed.flags & dns.flags.AA and parsed.flags & dns.flags.QR
    assert len(parsed.answer[0]) == 2 and len(parsed.additional) == 2
    assert parsed.payload == 1232 and parsed.ednsflags & dns.flags.DO


def test_truncate_keeps_whole_records_sets_tc_and_keeps_opt() -> None:
    full = codec.render(QUESTION, srv_answer(30), edns=wire.Edns(512, 0, False), payload=1232)
    assert len(full) > 512
    cut = codec.truncate(full, 512)
    assert len(cut) <= 512
    parsed = dns.message.from_wire(cut)
    assert parsed.flags & dns.flags.TC
    assert parsed.edns == 0  # OPT survived the cut
    assert 0 < len(parsed.answer[0]) < 30


def test_truncate_sets_tc_when_only_glue_is_left_out() -> None:
    full = codec.render(QUESTION, srv_answer(8), edns=None, payload=1232)
    layout = wire.walk_response(full)
    limit = layout.answer[-1].end + 5  # all SRV records fit, no glue does
    parsed = dns.message.from_wire(codec.truncate(full, limit))
    assert len(parsed.answer[0]) == 8 and not parsed.additional
    assert parsed.flags & dns.flags.TC


def test_truncate_leaves_small_messages_alone() -> None:
    full = codec.render(QUESTION, srv_answer(1), edns=None, payload=1232)
    assert codec.truncate(full, 512) is full
