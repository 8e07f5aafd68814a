"""What a reload may change, and the TOML line in error messages: plain values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway import options as cfg
from gateway.options import Config, ConfigError, Endpoint
from gateway.service import reload
from gateway.service.reload import ConfigSources

BASE = Config(upstream=())


def test_options_bound_to_sockets_and_processes_keep_their_old_value() -> None:
    new = replace(BASE, listen=(Endpoint("127.0.0.1", 5300),), workers=4, cache_size=7)
    settled, differ = reload.settle(BASE, new)
    assert differ == ("listen", "workers")
    assert settled.listen == BASE.listen and settled.workers == 1 and settled.cache_size == 7


def test_consul_options_need_a_restart_only_with_consul() -> None:
    static = replace(BASE, datacenter="dc2")
    assert reload.settle(BASE, static) == (static, ())
    with_consul = replace(BASE, consul="http://127.0.0.1:8500")
    settled, differ = reload.settle(with_consul, replace(with_consul, datacenter="dc2"))
    assert differ == ("datacenter",) and settled.datacenter == "dc1"
    # Turning Consul on is a restart as well.
    assert reload.settle(BASE, with_consul)[1] == ("consul",)


def test_every_restart_only_name_is_an_option() -> None:
    names = {opt.name for opt in cfg.OPTIONS}
    assert set(reload.RESTART_ALWAYS + reload.RESTART_WITH_CONSUL) <= names


def test_changed_lists_options_in_declaration_order() -> None:
    new = replace(BASE, log_level="debug", cache_size=5)
    assert reload.changed(BASE, new) == ("cache_size", "log_level")


def test_sources_load_the_file_again_and_keep_systemd_sockets(tmp_path: Path) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text('listen = ["127.0.0.1:5300"]\ncache_size = 3\n')
    passed = (Endpoint("127.0.0.1", 53),)
    sources = ConfigSources({"upstream": []}, conf, listen=passed)
    assert sources.load().listen == passed and sources.load().cache_size == 3
    conf.write_text("cache_size = 4\n")
    assert sources.load().cache_size == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cache_size = 1\ncache_size_x = 2\n", ":2: unknown option 'cache_size_x'"),
        ('# comment\n\n"cache_size" = -1\n', ":3: option 'cache_size'"),
        ("cache_size = 1\n[service_ttl]\nweb = 'x'\n", ":2: option 'service_ttl'"),
        # A key inside a table is not the top-level key of the same name.
        ("[service_ttl]\nweb = 1\n", None),
    ],
)
def test_toml_errors_name_the_line(tmp_path: Path, text: str, message: str | None) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text(text)
    if message is None:
        cfg.build({}, config_file=conf, env={})
        return
    with pytest.raises(ConfigError) as err:
        cfg.build({}, config_file=conf, env={})
    assert str(err.value).startswith(f"{conf}{message}")


def test_toml_key_lines_skip_keys_inside_tables(tmp_path: Path) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text("[service_ttl]\ncache_size = 1\n")
    assert cfg.toml_key_lines(conf, {"service_ttl": {}, "cache_size": 1}) == {"service_ttl": 1}
