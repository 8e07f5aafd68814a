from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.catalog import static as static_catalog
from gateway.catalog.answers import CatalogAnswerer
from gateway.catalog.model import CONNECT, CRITICAL, WARNING
from gateway.catalog.static import CatalogFileError
from gateway.dns import codec, wire
from gateway.options import EMBEDDED_CATALOG, Config
from tests.unit.helpers import parsed


def write(tmp_path: Path, data: object, name: str = "svc.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_embedded_catalog_loads() -> None:
    snap = static_catalog.load(EMBEDDED_CATALOG, "dc1")
    web = snap.services[("dc1", "web")]
    assert {i.node.name for i in web} == {"web-1", "web-2", "web-3"}
    assert {i.service_id: i.status for i in web}["web-3"] == WARNING
    assert {i.status for i in snap.services[("dc1", "db")]} == {"passing", CRITICAL}
    assert snap.nodes[("dc1", "web-1")].meta == {"rack": "r1"}


def test_camel_case_keys_and_agent_keys(tmp_path: Path) -> None:
    write(tmp_path, {
        "NodeName": "n9", "AdvertiseAddr": "192.0.2.9", "Datacenter": "DC2",
        "Service": {"Name": "api", "ID": "api-9", "Port": 9, "Tags": ["t"],
                    "Weights": {"Passing": 4, "Warning": 2},
                    "Checks": [{"TTL": "10s", "Status": "warning"}]},
    })  # fmt: skip
    snap = static_catalog.load(tmp_path, "dc1")
    (inst,) = snap.services[("dc2", "api")]
    assert (inst.node.name, inst.node.address, inst.service_id) == ("n9", "192.0.2.9", "api-9")
    assert (inst.weight_passing, inst.weight_warning, inst.status) == (4, 2, WARNING)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"service": {"port": 80}}, "key 'name' is required"),
        ({"service": {"name": "x", "port": 70000}}, "key 'port'"),
        ({"service": {"name": "x", "tags": "a"}}, "key 'tags'"),
        ({"service": {"name": "x", "weights": {"passing": 0}}}, "weights.passing"),
        ({"service": {"name": "x", "check": {"status": "sick"}}}, "'status'"),
        ({"service": {"name": "x", "colour": "red"}}, "unknown key 'colour'"),
        ({"servics": []}, "unknown key 'servics'"),
        ({"service": {"name": "x", "connect": True}}, "key 'connect' must be an object"),
        ({"service": {"name": "x", "connect": {"native": "yes"}}}, "'connect.native'"),
        ({"service": {"name": "x", "kind": 7}}, "key 'kind' must be a string"),
        ({"service": {"name": "x", "kind": "connect-proxy"}}, "needs the object 'proxy'"),
        (
            {"service": {"name": "x", "kind": "connect-proxy", "proxy": {}}},
            "'proxy.destination_service_name' is required",
        ),
        (
            {
                "service": {
                    "name": "x",
                    "kind": "connect-proxy",
                    "proxy": {"destination_service_name": "a.b"},
                }
            },
            "one DNS label",
        ),
        ({"services": {}}, "must be a list"),
        ([], "expected a JSON object"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, data: object, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CatalogFileError, match=message) as err:
        static_catalog.load(tmp_path, "dc1")
    assert str(path) in str(err.value)


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(CatalogFileError, match="not valid JSON"):
        static_catalog.load(tmp_path, "dc1")


def write_raw(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "svc.json"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # Issue 9: each of these ended in a traceback at start.
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deeply"),
        (b'{"service": {"name": "x", "weights": [1]}}', "key 'weights' must be an object"),
        (b'{"service": {"name": "x", "checks": 3}}', "key 'checks' must be a list"),
        (b'{"service": {"name": "x", "id": {"a": 1}}}', "key 'id' must be a string"),
        (b'{"service": {"name": "x", "port": 1' + b"0" * 5000 + b"}}", "not valid JSON"),
        (b'{"service": {"name": "\xff"}}', "not UTF-8"),
    ],
)
def test_garbage_is_refused_with_the_file_named(tmp_path: Path, raw: bytes, message: str) -> None:
    path = write_raw(tmp_path, raw)
    with pytest.raises(CatalogFileError, match=message) as err:
        static_catalog.load(tmp_path, "dc1")
    assert str(err.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Issue 9: these loaded, then every query touching them logged a traceback.
        ({"node_name": "n\u00f6de", "service": {"name": "x"}}, "'node_name' must be ASCII"),
        ({"node_name": "n" * 70, "service": {"name": "x"}}, "'node_name' is longer than"),
        ({"datacenter": "", "service": {"name": "x"}}, "'datacenter' must not be empty"),
        ({"service": {"name": "s" * 70}}, "'name' is longer than a DNS label"),
        ({"service": {"name": "x", "address": "a..b"}}, "'address' does not make a DNS name"),
        ({"advertise_addr": "-" * 64 + ".x", "service": {"name": "x"}}, "'advertise_addr'"),
        ({"node_name": "a.b", "service": {"name": "x"}}, "one DNS label"),
        ({"node_meta": {"k": "v" * 513}, "service": {"name": "x"}}, "'node_meta'"),
        ({"node_meta": {f"k{i}": "v" for i in range(65)}, "service": {"name": "x"}}, "pairs"),
    ],
)
def test_names_that_cannot_be_dns_names_are_refused(
    tmp_path: Path, data: object, message: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CatalogFileError, match=message) as err:
        static_catalog.load(tmp_path, "dc1")
    assert str(err.value).startswith(f"{path}:")


def test_names_must_fit_below_every_domain(tmp_path: Path) -> None:
    """63-character labels fit under "consul" but not under a 200-character domain."""
    write(tmp_path, {"node_name": "n" * 63, "datacenter": "d" * 63, "service": {"name": "x"}})
    assert static_catalog.load(tmp_path, "dc1", ("consul",)).services
    long_domain = ".".join(["a" * 60] * 3)
    with pytest.raises(CatalogFileError, match="does not make a DNS name"):
        static_catalog.load(tmp_path, "dc1", ("consul", long_domain))


def test_host_name_addresses_are_kept(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"advertise_addr": "node.example", "service": {"name": "x", "address": "h.example"}},
    )
    (inst,) = static_catalog.load(tmp_path, "dc1").services[("dc1", "x")]
    assert (inst.address, inst.node.address) == ("h.example", "node.example")


def test_a_folder_that_cannot_be_listed_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: an unreadable folder used to load as an empty catalog."""
    write(tmp_path, {"service": {"name": "x"}})

    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(CatalogFileError, match="cannot read the catalog folder") as err:
        static_catalog.load(tmp_path, "dc1")
    assert str(err.value).startswith(f"{tmp_path}:")


def test_connect_native_and_proxies_answer_connect_names(tmp_path: Path) -> None:
    """Issue 8: what a service definition can say of Connect, the static catalog answers."""
    write(tmp_path, {
        "node_name": "m1", "advertise_addr": "192.0.2.50",
        "services": [
            {"name": "pay", "port": 7100},
            {"name": "pay-sidecar-proxy", "kind": "connect-proxy", "port": 21000,
             "address": "192.0.2.51", "proxy": {"destination_service_name": "Pay"}},
            {"name": "native", "port": 7200, "Connect": {"Native": True}},
            {"name": "plain", "port": 7300, "connect": {"native": False}},
        ],
    })  # fmt: skip
    snap = static_catalog.load(tmp_path, "dc1")
    connect = snap.endpoints[CONNECT]
    assert [i.service_id for i in connect[("dc1", "pay")]] == ["pay-sidecar-proxy"]
    assert [i.service_id for i in connect[("dc1", "native")]] == ["native"]
    assert ("dc1", "plain") not in connect
    answerer = CatalogAnswerer(Config())

    def ask(name: str) -> codec.Answer:
        out = answerer.answer(snap, parsed(name, "A"), "consul")
        assert isinstance(out, codec.Answer)
        return out

    assert [r.rdata for r in ask("pay.connect.consul").answer] == [bytes([192, 0, 2, 51])]
    assert [r.rdata for r in ask("native.connect.consul").answer] == [bytes([192, 0, 2, 50])]
    assert ask("plain.connect.consul").rcode == wire.NXDOMAIN
    assert ask("pay.ingress.consul").rcode == wire.NXDOMAIN  # not expressible in a file
    assert ask("pay.service.consul").answer  # the service itself is unchanged
