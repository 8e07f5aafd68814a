"""Upstreams from a resolv file that changes while the gateway runs (issue 8).

dnsmasq polls its resolv file and uses the new nameservers; the gateway does
the same (``--resolv-file``, on by default; ``--no-poll-resolv`` is dnsmasq's
``no-poll``), still skipping its own listen addresses so it never forwards to
itself. Two real Knot servers on port 53 of two loopback addresses stand for
the nameservers a network manager would write (resolv.conf has no ports).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.process import wait_for
from harness.zone import ZONE, ZONE_RECORDS, ZoneRecord
from tests.support.dnsclient import query

NAME = f"who.{ZONE}"
DNS_PORT = 53
# A /24 of loopback of our own (from the pid): tests of other runs use other ones.
NET = f"127.53.{os.getpid() % 250 + 1}"
FIRST, SECOND, GATEWAY = f"{NET}.1", f"{NET}.2", f"{NET}.3"


def knot_answering(host: str, address: str) -> KnotUpstream:
    records = (*ZONE_RECORDS, ZoneRecord(NAME, "A", address))
    return KnotUpstream(host=host, port=DNS_PORT, records=records)


@pytest.fixture(scope="module")
def knots() -> Iterator[None]:
    with knot_answering(FIRST, "198.18.0.1"), knot_answering(SECOND, "198.18.0.2"):
        yield


def answer(gateway: GatewayProcess) -> str | None:
    msg = query(gateway.host, gateway.port, NAME, "A")
    return msg.answer[0][0].to_text() if msg.answer else None


def test_a_changed_resolv_file_changes_the_upstreams(knots: None, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    # Our own address first: skipped, or the gateway would ask itself.
    resolv.write_text(f"nameserver {GATEWAY}\nnameserver {FIRST}\n")
    still = tmp_path / "still.conf"
    still.write_text(f"nameserver {FIRST}\n")
    common = ("--cache-size", "0", "--forward-timeout", "0.5")
    with (
        GatewayProcess("--resolv-file", str(resolv), *common, host=GATEWAY, port=DNS_PORT) as gw,
        GatewayProcess("--resolv-file", str(still), "--no-poll-resolv", *common) as fixed,
    ):
        assert answer(gw) == "198.18.0.1"
        assert answer(fixed) == "198.18.0.1"

        resolv.write_text(f"nameserver {GATEWAY}\nnameserver {SECOND}\n")
        wait_for(lambda: answer(gw) == "198.18.0.2", message="the second nameserver answering")
        assert f"upstreams {SECOND}:53" in gw.log_text()
        assert f"upstreams {GATEWAY}" not in gw.log_text()

        # A file with no usable nameserver (only ourselves) keeps the upstreams.
        resolv.write_text(f"nameserver {GATEWAY}\n")
        wait_for(lambda: "lists no usable nameserver" in gw.log_text(), message="the warning")
        assert answer(gw) == "198.18.0.2"

        # --no-poll-resolv: read once at start, as dnsmasq's no-poll.
        still.write_text(f"nameserver {SECOND}\n")
        resolv.write_text(f"nameserver {FIRST}\n")
        wait_for(lambda: answer(gw) == "198.18.0.1", message="the polling gateway seeing it")
        assert answer(fixed) == "198.18.0.1"
        assert "changed: upstreams" not in fixed.log_text()


def test_no_resolv_ignores_the_file(knots: None, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {FIRST}\n")
    with GatewayProcess(
        "--resolv-file",
        str(resolv),
        "--no-resolv",
        "--server",
        f"{SECOND}#53",
        probe_name="consul.",
    ) as gw:
        assert answer(gw) == "198.18.0.2"  # only the --server upstream
