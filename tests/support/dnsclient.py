"""Small DNS client helpers for tests: dnspython queries and the real ``dig``.

Every helper takes an explicit server; nothing here ever consults
/etc/resolv.conf, which on test machines points at non-loopback resolvers.
"""

from __future__ import annotations

import subprocess

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def query(
    server_host: str,
    port: int,
    name: str,
    rdtype: str | dns.rdatatype.RdataType,
    *,
    tcp: bool = False,
    edns: bool = True,
    payload: int = 1232,
    timeout: float = 3.0,
    rdclass: str | dns.rdataclass.RdataClass = "IN",
    rd: bool = True,
) -> dns.message.Message:
    """One query, no retries, no TCP fallback: tests want to see TC=1 themselves.

    Raises ``dns.exception.Timeout`` when nothing answers within ``timeout``.
    """
    msg = dns.message.make_query(
        name, rdtype, rdclass, use_edns=0 if edns else False, payload=payload
    )
    if not rd:
        msg.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(msg, server_host, timeout=timeout, port=port)
    # A datagram from anyone but the server is not the answer: on a busy loopback a
    # late reply meant for a closed socket whose port the kernel gave this one can
    # arrive first (seen once in a full run); dnspython then keeps waiting.
    return dns.query.udp(msg, server_host, timeout=timeout, port=port, ignore_unexpected=True)


def rrset(
    msg: dns.message.Message,
    name: str,
    rdtype: str | dns.rdatatype.RdataType,
    section: str = "answer",
) -> dns.rrset.RRset | None:
    """The RRset ``name``/``rdtype`` in ``section`` of ``msg``, or None."""
    want_name = dns.name.from_text(name)
    want_type = dns.rdatatype.RdataType.make(rdtype)
    for rr in getattr(msg, section):
        if rr.name == want_name and rr.rdtype == want_type:
            assert isinstance(rr, dns.rrset.RRset)
            return rr
    return None


def values(
    msg: dns.message.Message,
    name: str,
    rdtype: str | dns.rdatatype.RdataType,
    section: str = "answer",
) -> set[str]:
    """The rdata of one RRset as presentation-format strings (empty if absent)."""
    found = rrset(msg, name, rdtype, section)
    return {rd.to_text() for rd in found} if found is not None else set()


class DigError(RuntimeError):
    """dig exited non-zero (9 = no reply); the message carries its output."""


def dig(server_host: str, port: int, *args: str, check: bool = True) -> str:
    """Run the real ``dig`` against ``server_host``:``port`` and return stdout."""
    cmd = ["dig", f"@{server_host}", "-p", str(port), "+time=2", "+tries=1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise DigError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def dig_short(server_host: str, port: int, *args: str) -> list[str]:
    """``dig +short`` output as a list of lines."""
    out = dig(server_host, port, "+short", *args)
    return [line.strip() for line in out.splitlines() if line.strip()]
