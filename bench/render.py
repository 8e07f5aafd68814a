"""Template rendering: ``codec.render`` against dnspython's renderer.

``python -m bench.render [--services N] [--repeat K]`` renders an A answer
of 10 records for each of N services both ways and prints the time per
answer. Why it matters: prepared templates are rendered again on the first
query after every catalog change, so the renderer's cost per answer,
times the services asked, is the work a change costs.
"""

from __future__ import annotations

import argparse
import time

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rrset

from gateway.dns import codec, wire

RECORDS_PER_ANSWER = 10


def _answers(services: int) -> list[tuple[bytes, codec.Answer]]:
    out = []
    for s in range(services):
        owner = wire.to_wire(f"svc{s}.service.consul")
        records = tuple(
            codec.Record(owner, wire.A, 0, bytes((10, s // 256 % 256, s % 256, i)))
            for i in range(RECORDS_PER_ANSWER)
        )
        out.append((owner + b"\x00\x01\x00\x01", codec.Answer(wire.NOERROR, answer=records)))
    return out


def time_codec(answers: list[tuple[bytes, codec.Answer]]) -> float:
    start = time.perf_counter()
    for question, answer in answers:
        codec.render(question, answer, edns=None, payload=1232)
    return time.perf_counter() - start


def time_dnspython(answers: list[tuple[bytes, codec.Answer]]) -> float:
    # Names and rdata objects are made before the clock starts: only rendering counts.
    prepared = []
    for question, answer in answers:
        name = dns.name.from_wire(question[:-4], 0)[0]
        rdatas = [
            dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, ".".join(map(str, r.rdata)))  # type: ignore[no-untyped-call]
            for r in answer.answer
        ]
        prepared.append((name, rdatas))
    start = time.perf_counter()
    for name, rdatas in prepared:
        message = dns.message.Message(id=0)
        message.flags = dns.flags.QR | dns.flags.AA | dns.flags.RA
        message.question.append(dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.A))
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.A)
        for rdata in rdatas:
            rrset.add(rdata, 0)
        message.answer.append(rrset)
        message.to_wire()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    answers = _answers(args.services)
    for _ in range(args.repeat):
        ours = time_codec(answers)
        theirs = time_dnspython(answers)
        n = args.services
        print(
            f"{n} answers of {RECORDS_PER_ANSWER} A records: codec.render "
            f"{ours / n * 1e6:.1f} us/answer, dnspython {theirs / n * 1e6:.1f} us/answer "
            f"({theirs / ours:.1f}x)"
        )


if __name__ == "__main__":
    main()
