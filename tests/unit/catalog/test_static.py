from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.catalog import static as static_catalog
from gateway.catalog.model import CRITICAL, WARNING
from gateway.catalog.static import CatalogFileError
from gateway.options import EMBEDDED_CATALOG


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
