from __future__ import annotations

from pathlib import Path

import pytest

from gateway import options as cfg
from gateway.options import ConfigError, Endpoint

GOOD = [
    ({"listen": ["127.0.0.1:5353", "[::1]:53"]},
     "listen", (Endpoint("127.0.0.1", 5353), Endpoint("::1", 53))),
    ({"upstream": ["192.0.2.1", "[2001:db8::1]:5300"]},
     "upstream", (Endpoint("192.0.2.1", 53), Endpoint("2001:db8::1", 5300))),
    ({"domain": "Consul."}, "domain", "consul"),
    ({"service_ttl": ["web=30", "*=5"]}, "service_ttl", {"*": 5, "web": 30}),
    ({"service_ttl": {"Web": 3}}, "service_ttl", {"*": 0, "web": 3}),
    ({"only_passing": "yes"}, "only_passing", True),
    ({"forward_timeout": "0.5"}, "forward_timeout", 0.5),
    ({"consul": "127.0.0.1:8500"}, "consul", "http://127.0.0.1:8500"),
    ({"workers": 4}, "workers", 4),
]  # fmt: skip


@pytest.mark.parametrize(("values", "key", "expected"), GOOD)
def test_good_values(values: dict[str, object], key: str, expected: object) -> None:
    assert cfg.convert(values, "test")[key] == expected


BAD = [
    ({"listen": ["localhost:53"]}, "option 'listen'"),
    ({"listen": ["127.0.0.1:70000"]}, "out of range"),
    ({"upstream": ["[::1"]}, "missing ']'"),
    ({"cache_size": -1}, "option 'cache_size'"),
    ({"cache_size": True}, "whole number"),
    ({"forward_timeout": 0}, "out of range"),
    ({"domain": "bad domain"}, "option 'domain'"),
    ({"datacenter": "a.b"}, "single label"),
    ({"consul": "ftp://x"}, "scheme"),
    ({"only_passing": "maybe"}, "true or false"),
    ({"service_ttl": ["web"]}, "NAME=SECONDS"),
    ({"log_level": "loud"}, "option 'log_level'"),
    ({"catalog": "/no/such/path"}, "does not exist"),
    ({"bogus": 1}, "unknown option 'bogus'"),
]


@pytest.mark.parametrize(("values", "message"), BAD)
def test_bad_values_name_the_option_and_source(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        cfg.convert(values, "/etc/gw.toml")
    assert str(err.value).startswith("/etc/gw.toml: ")


def test_toml_file_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('domain = "corp"\nnode_ttl = 7\nupstream = ["127.0.0.1:5300"]\n')
    config = cfg.build({"node_ttl": "9"}, config_file=path, env={})
    assert (config.domain, config.node_ttl) == ("corp", 9)  # the flag wins
    assert config.upstream == (Endpoint("127.0.0.1", 5300),)


def test_unknown_toml_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("cache_sise = 10\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown option 'cache_sise'"):
        cfg.build({}, config_file=path, env={})


def test_environment_conventions() -> None:
    config = cfg.build(
        {"upstream": []},
        env={"CONSUL_HTTP_ADDR": "10.0.0.1:8500", "CONSUL_HTTP_TOKEN": "secret"},
    )
    assert config.consul == "http://10.0.0.1:8500" and config.consul_token == "secret"
    assert "secret" not in repr(config)


def test_cross_checks() -> None:
    with pytest.raises(ConfigError, match="cache_min_ttl"):
        cfg.build({"cache_min_ttl": 10, "cache_max_ttl": 5, "upstream": []}, env={})
    with pytest.raises(ConfigError, match="consul_cert"):
        cfg.build({"consul_cert": __file__, "upstream": []}, env={})


def test_embedded_default_without_consul() -> None:
    config = cfg.build({"upstream": []}, env={})
    assert config.catalog == cfg.EMBEDDED_CATALOG and config.zones == cfg.EMBEDDED_ZONES


def test_resolv_conf_skips_wildcard_self(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.9\nsearch x\n")
    assert cfg.system_upstreams((Endpoint("0.0.0.0", 53),), conf) == (Endpoint("192.0.2.9", 53),)
    assert cfg.system_upstreams((Endpoint("0.0.0.0", 5353),), conf)[0].host == "127.0.0.53"
    assert cfg.system_upstreams((Endpoint("127.0.0.1", 53),), tmp_path / "missing") == ()
