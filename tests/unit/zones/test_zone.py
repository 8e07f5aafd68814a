from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from gateway.dns import codec, wire
from gateway.options import EMBEDDED_ZONES
from gateway.zones import zone as zones
from tests.unit.helpers import name_text, parsed

ZONE = """$ORIGIN t.example.
$TTL 100
@ SOA ns.t.example. h.t.example. 1 2 3 4 50
@ NS ns
ns A 192.0.2.53
a A 192.0.2.1
c1 CNAME c2
c2 CNAME a
out CNAME www.elsewhere.example.
loop1 CNAME loop2
loop2 CNAME loop1
*.wild A 192.0.2.9
x.y.deep A 192.0.2.10
sub NS ns.sub
ns.sub A 192.0.2.99
"""


@pytest.fixture
def zone(tmp_path: Path) -> zones.Zone:
    path = tmp_path / "t.example.zone"
    path.write_text(ZONE)
    return zones.load_zone(path)


def ask(zone: zones.Zone, name: str, rdtype: str = "A") -> codec.Answer:
    return zones.answer(zone, parsed(name, rdtype))


def test_positive_and_cname_chain(zone: zones.Zone) -> None:
    assert ask(zone, "a.t.example").answer[0].rdata == bytes([192, 0, 2, 1])
    chain = ask(zone, "c1.t.example").answer
    assert [r.rtype for r in chain] == [wire.CNAME, wire.CNAME, wire.A]
    assert [r.rtype for r in ask(zone, "out.t.example").answer] == [wire.CNAME]
    assert len(ask(zone, "loop1.t.example").answer) == 2  # loop cut, no hang


def test_negative_answers(zone: zones.Zone) -> None:
    nx = ask(zone, "none.t.example")
    assert nx.rcode == wire.NXDOMAIN and nx.authority[0].ttl == 50
    nodata = ask(zone, "a.t.example", "AAAA")
    assert nodata.rcode == wire.NOERROR and not nodata.answer and nodata.authority
    ent = ask(zone, "y.deep.t.example")  # empty non-terminal
    assert ent.rcode == wire.NOERROR and not ent.answer


def test_wildcard_and_referral(zone: zones.Zone) -> None:
    wild = ask(zone, "anything.wild.t.example")
    assert wild.answer[0].rdata == bytes([192, 0, 2, 9])
    assert name_text(wild.answer[0].name) == "anything.wild.t.example"
    ref = ask(zone, "host.sub.t.example")
    assert not ref.authoritative and ref.authority[0].rtype == wire.NS
    assert ref.additional[0].rdata == bytes([192, 0, 2, 99])


def test_any_is_one_rrset(zone: zones.Zone) -> None:
    assert len({r.rtype for r in ask(zone, "t.example", "ANY").answer}) == 1


def test_embedded_zone_and_errors(tmp_path: Path) -> None:
    assert dns.name.from_text("home.arpa") in zones.load_zones(EMBEDDED_ZONES)
    bad = tmp_path / "bad.zone"
    bad.write_text("$ORIGIN bad.\n@ IN A not-an-ip\n")
    with pytest.raises(zones.ZoneFileError, match=r"bad\.zone"):
        zones.load_zones(tmp_path)


def test_include_is_refused_unless_allowed(tmp_path: Path) -> None:
    """$INCLUDE reads any file the gateway can read: off unless --zone-include."""
    (tmp_path / "part.txt").write_text("ns A 192.0.2.53\n")
    path = tmp_path / "inc.example.zone"
    path.write_text(
        f"$ORIGIN inc.example.\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n$INCLUDE {tmp_path}/part.txt\n"
    )
    with pytest.raises(zones.ZoneFileError, match=r"\$INCLUDE.*--zone-include") as err:
        zones.load_zones(tmp_path)
    assert str(err.value).startswith(f"{path}:")
    allowed = zones.load_zones(tmp_path, allow_include=True)
    (zone,) = allowed.values()
    assert dns.name.from_text("ns.inc.example.") in zone.names


def test_a_folder_that_cannot_be_listed_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(zones.ZoneFileError, match="cannot read the zones folder: Permission") as e:
        zones.load_zones(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}:")
