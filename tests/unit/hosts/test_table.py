"""Answers from hosts lines and the RFC 6761 local names (no files, no sockets)."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from gateway.dns import codec, wire
from gateway.dns.codec import Answer
from gateway.hosts.parse import parse
from gateway.hosts.table import HostsTable
from tests.unit.helpers import query_bytes

HOSTS = """\
127.0.0.1 localhost
127.0.1.1 debian
192.0.2.5 Myhost myhost.example
192.0.2.6 myhost
2001:db8::5 myhost
192.0.2.5 second-name
"""


def table(text: str = HOSTS, ttl: int = 0) -> HostsTable:
    lines, warnings = parse(text, "test")
    assert not warnings
    return HostsTable(lines, ttl)


def ask(t: HostsTable, name: str, rdtype: str = "A") -> dns.message.Message | None:
    packet = query_bytes(name, rdtype)
    query = wire.parse_query(packet)
    answer = t.answer(query)
    if answer is None:
        return None
    assert isinstance(answer, Answer)
    question = query.qname_wire.lower() + packet[query.question_end - 4 : query.question_end]
    return dns.message.from_wire(codec.render(question, answer, edns=None, payload=1232))


def records(msg: dns.message.Message | None, section: str = "answer") -> set[str]:
    assert msg is not None
    return {f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} {rd}" for rr in getattr(msg, section)
            for rd in rr}  # fmt: skip


def test_names_several_addresses_any_case_without_a_dot() -> None:
    t = table()
    assert records(ask(t, "MYHOST")) == {"myhost. A 192.0.2.5", "myhost. A 192.0.2.6"}
    assert records(ask(t, "myhost", "AAAA")) == {"myhost. AAAA 2001:db8::5"}
    assert records(ask(t, "myhost.EXAMPLE")) == {"myhost.example. A 192.0.2.5"}
    assert len(records(ask(t, "myhost", "ANY"))) == 3
    msg = ask(t, "myhost")
    assert msg is not None and msg.flags & dns.flags.AA


def test_other_types_of_a_known_name_are_nodata() -> None:
    msg = ask(table(), "myhost", "MX")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR
    assert not msg.answer and not msg.authority
    msg = ask(table(), "myhost.example", "AAAA")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer


def test_unknown_names_are_not_ours() -> None:
    t = table()
    assert ask(t, "other.example") is None
    assert not t.claims(wire.to_wire("other.example."))
    assert t.claims(wire.to_wire("myhost."))


def test_reverse_is_the_first_name_of_the_first_line() -> None:
    t = table()
    assert records(ask(t, "5.2.0.192.in-addr.arpa", "PTR")) == {
        "5.2.0.192.in-addr.arpa. PTR myhost."
    }
    assert records(ask(t, "6.2.0.192.in-addr.arpa", "PTR")) == {
        "6.2.0.192.in-addr.arpa. PTR myhost."
    }
    v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert records(ask(t, v6, "PTR")) == {f"{v6}. PTR myhost."}
    # Another type at a reverse name is the upstream's to answer.
    assert ask(t, "5.2.0.192.in-addr.arpa", "A") is None


def test_ttl_is_local_ttl() -> None:
    msg = ask(table(ttl=30), "myhost")
    assert msg is not None and {rr.ttl for rr in msg.answer} == {30}


@pytest.mark.parametrize("t", [HostsTable(), table()], ids=["no hosts file", "hosts file"])
def test_localhost_names_rfc_6761(t: HostsTable) -> None:
    assert records(ask(t, "localhost")) == {"localhost. A 127.0.0.1"}
    assert records(ask(t, "localhost", "AAAA")) == {"localhost. AAAA ::1"}
    assert records(ask(t, "a.b.LOCALHOST")) == {"a.b.localhost. A 127.0.0.1"}
    assert records(ask(t, "x.localhost", "AAAA")) == {"x.localhost. AAAA ::1"}
    msg = ask(t, "localhost", "MX")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert records(msg, "authority") == {
        "localhost. SOA localhost. nobody.invalid. 1 3600 1200 604800 0"
    }


@pytest.mark.parametrize("t", [HostsTable(), table()], ids=["no hosts file", "hosts file"])
def test_loopback_reverse_names(t: HostsTable) -> None:
    assert records(ask(t, "1.0.0.127.in-addr.arpa", "PTR")) == {
        "1.0.0.127.in-addr.arpa. PTR localhost."
    }
    v6 = "1." + "0." * 31 + "ip6.arpa"
    assert records(ask(t, v6, "PTR")) == {f"{v6}. PTR localhost."}
    missing = ask(t, "9.9.9.127.in-addr.arpa", "PTR")
    assert missing is not None and missing.rcode() == dns.rcode.NXDOMAIN
    assert records(missing, "authority")  # the SOA: cacheable (RFC 2308)
    nodata = ask(t, "1.0.0.127.in-addr.arpa", "A")
    assert nodata is not None and nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert records(nodata, "authority")


def test_loopback_lines_of_a_hosts_file_join_the_loopback_zone() -> None:
    t = table()
    assert records(ask(t, "1.1.0.127.in-addr.arpa", "PTR")) == {
        "1.1.0.127.in-addr.arpa. PTR debian."
    }
    # An empty non-terminal of the zone: NODATA, not NXDOMAIN.
    ent = ask(t, "1.0.127.in-addr.arpa", "PTR")
    assert ent is not None and ent.rcode() == dns.rcode.NOERROR


def test_names_are_counted() -> None:
    assert len(table()) == 5
    assert len(HostsTable()) == 0
