"""Response-rate limiting on a fake clock, slips, and the amplification cut."""

from __future__ import annotations

from collections import Counter

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from gateway.server.ratelimit import (
    DROP,
    ERROR_KEY,
    NXDOMAIN_KEY,
    SEND,
    SLIP,
    ResponseRateLimiter,
    UdpLimits,
    answer_key,
    bound_amplification,
    slip_reply,
)
from tests.unit.helpers import query_bytes

BLOCK = bytes([10, 99, 0])
OTHER_BLOCK = bytes([10, 99, 1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(name: str = "web.service.consul.", rdtype: str = "A", *, records: int = 1,
             rcode: dns.rcode.Rcode = dns.rcode.NOERROR, edns: bool = False) -> bytes:  # fmt: skip
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if rdtype == "TXT":
        texts = [f'"{chr(97 + i) * 200}"' for i in range(records)]
        reply.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", *texts))
    else:
        addresses = [f"192.0.2.{i + 1}" for i in range(records)]
        if addresses:
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *addresses))
    return reply.to_wire(max_size=65535)


def limiter(
    rate: int = 5, window: float = 15.0, slip: int = 2, **kw: int
) -> tuple[ResponseRateLimiter, Clock]:
    clock = Clock()
    return ResponseRateLimiter(rate, window, slip, clock, **kw), clock


def test_a_fresh_account_pays_for_rate_responses_then_limits() -> None:
    rrl, _ = limiter(rate=5)
    verdicts = [rrl.verdict(BLOCK, response()) for _ in range(5)]
    assert verdicts == [SEND] * 5
    assert rrl.verdict(BLOCK, response()) != SEND


def test_the_account_refills_at_rate_per_second_up_to_rate() -> None:
    rrl, clock = limiter(rate=4)
    for _ in range(4):
        assert rrl.verdict(BLOCK, response()) == SEND
    clock.now += 0.5  # two responses' worth
    assert [rrl.verdict(BLOCK, response()) == SEND for _ in range(3)] == [True, True, False]
    clock.now += 100  # long quiet: back to at most ``rate``, not 400
    assert sum(rrl.verdict(BLOCK, response()) == SEND for _ in range(10)) == 4


def test_the_window_keeps_a_flooding_block_limited() -> None:
    rrl, clock = limiter(rate=2, window=10, slip=0)
    for _ in range(1000):  # a flood: the balance sinks to -window * rate = -20
        rrl.verdict(BLOCK, response())
    clock.now += 9  # refilled by 18: still below zero
    assert rrl.verdict(BLOCK, response()) == DROP
    clock.now += 11  # quiet for a whole window: answered again
    assert rrl.verdict(BLOCK, response()) == SEND


def test_every_slip_th_limited_response_slips() -> None:
    for slip, expected_slips in ((1, 100), (2, 50), (3, 34), (0, 0)):
        rrl, _ = limiter(rate=5, slip=slip)
        counts = Counter(rrl.verdict(BLOCK, response()) for _ in range(105))
        assert counts[SEND] == 5
        assert counts[SLIP] == expected_slips, slip
        assert counts[DROP] == 100 - expected_slips, slip


def test_accounts_are_per_block_and_per_answer() -> None:
    rrl, _ = limiter(rate=1, slip=0)
    assert rrl.verdict(BLOCK, response("a.example.")) == SEND
    assert rrl.verdict(BLOCK, response("a.example.")) == DROP
    assert rrl.verdict(OTHER_BLOCK, response("a.example.")) == SEND
    assert rrl.verdict(BLOCK, response("b.example.")) == SEND
    assert rrl.verdict(BLOCK, response("a.example.", "AAAA", records=0)) == SEND  # another type
    # 0x20 case mixing is the same answer: no new account.
    assert rrl.verdict(BLOCK, response("A.EXAMPLE.")) == DROP


def test_answer_keys_group_nxdomain_and_errors_per_block() -> None:
    nx1 = response("r1.example.", records=0, rcode=dns.rcode.NXDOMAIN)
    nx2 = response("r2.example.", records=0, rcode=dns.rcode.NXDOMAIN)
    assert answer_key(nx1) == answer_key(nx2) == NXDOMAIN_KEY
    refused = response("x.example.", records=0, rcode=dns.rcode.REFUSED)
    servfail = response("y.example.", records=0, rcode=dns.rcode.SERVFAIL)
    assert answer_key(refused) == answer_key(servfail) == ERROR_KEY
    assert answer_key(response("Web.Example.")) == b"\x03web\x07example\x00\x00\x01\x00\x01"
    assert answer_key(b"\x00" * 12) == ERROR_KEY
    rrl, _ = limiter(rate=1, slip=0)
    assert rrl.verdict(BLOCK, nx1) == SEND
    assert rrl.verdict(BLOCK, nx2) == DROP  # random names cannot open new accounts


def test_the_table_is_bounded_and_forgets_idle_accounts_first() -> None:
    rrl, clock = limiter(rate=1, window=10, slip=0, max_accounts=100)
    for i in range(100):
        rrl.verdict(BLOCK, response(f"n{i}.example."))
    assert len(rrl) == 100
    clock.now += 11  # all idle for a window: forgetting them loses nothing
    rrl.verdict(BLOCK, response("new.example."))
    assert len(rrl) == 1
    for i in range(200):  # all active: the oldest tenth makes room each time
        rrl.verdict(BLOCK, response(f"m{i}.example."))
    assert len(rrl) <= 100


def test_slip_reply_is_tiny_with_tc_and_no_records() -> None:
    full = response("web.service.consul.", records=20, edns=True)
    tiny = slip_reply(full)
    msg = dns.message.from_wire(tiny)
    assert msg.flags & dns.flags.TC and msg.flags & dns.flags.QR
    assert not msg.answer and msg.edns == 0
    assert msg.question[0].name.to_text() == "web.service.consul."
    assert len(tiny) == len(query_bytes("web.service.consul", edns=True))


def test_amplification_cut_keeps_whole_records_with_tc() -> None:
    query_size = len(query_bytes("big.example", "TXT", edns=True))
    full = response("big.example.", "TXT", records=8, edns=True)
    assert len(full) > 10 * query_size  # ~1,700 bytes for a ~40-byte query
    cut = bound_amplification(full, query_size, 10)
    assert len(cut) <= 10 * query_size
    msg = dns.message.from_wire(cut)  # whole records: it parses
    assert msg.flags & dns.flags.TC
    assert 0 < len(msg.answer[0]) < 8 and msg.edns == 0
    small = response("web.service.consul.")
    assert bound_amplification(small, 40, 10) is small


def test_udp_limits_count_and_apply_in_order() -> None:
    counts: Counter[str] = Counter()
    clock = Clock()
    limits = UdpLimits(ResponseRateLimiter(2, 15, 2, clock), 10, counts)
    big = response("big.example.", "TXT", records=8, edns=True)
    outcomes = [limits.outgoing(BLOCK, 40, big) for _ in range(6)]
    assert [len(o) <= 400 if o else o for o in outcomes[:2]] == [True, True]  # cut, sent
    assert counts["amplification_truncated"] == 2
    slipped = [o for o in outcomes[2:] if o is not None]
    assert len(slipped) == 2 and outcomes.count(None) == 2
    assert dict(counts) == {"amplification_truncated": 2, "rrl_limited": 4,
                            "rrl_slipped": 2, "rrl_dropped": 2}  # fmt: skip
    unlimited = UdpLimits(None, 0, counts)
    assert unlimited.outgoing(BLOCK, 40, big) is big
