from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path

import pytest

from gateway import options as cfg
from gateway.__main__ import parser
from gateway.options import ConfigError, Endpoint, Option

README = Path(__file__).resolve().parents[2] / "README.md"
README_TABLE_HEADER = "| flag | default | meaning |"

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
    ({"allow": ["10.0.0.1/8", "Local", "2001:db8::/32"]},
     "allow", (ipaddress.ip_network("10.0.0.0/8"), "local", ipaddress.ip_network("2001:db8::/32"))),
    ({"allow_recursion": "192.0.2.7"}, "allow_recursion", (ipaddress.ip_network("192.0.2.7/32"),)),
    ({"refuse_action": "DROP"}, "refuse_action", "drop"),
    ({"udp_batch": "OFF"}, "udp_batch", "off"),
    ({"rate_limit": "20"}, "rate_limit", 20),
    ({"rate_limit_slip": 0}, "rate_limit_slip", 0),
    ({"max_amplification": 0}, "max_amplification", 0),
    ({"limit_loopback": "on"}, "limit_loopback", True),
]  # fmt: skip


@pytest.mark.parametrize(("values", "key", "expected"), GOOD)
def test_good_values(values: dict[str, object], key: str, expected: object) -> None:
    assert cfg.convert(values, "test")[key] == expected


BAD = [
    ({"listen": ["local host:53"]}, "option 'listen'"),
    ({"listen": ["lo:x"]}, "option 'listen': port 'x' is not a number"),
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
    ({"allow": ["10.0.0.0/33"]}, "option 'allow': '10.0.0.0/33' is not a CIDR"),
    ({"allow": []}, "option 'allow': needs at least one"),
    ({"allow_recursion": ["anyone"]}, "option 'allow_recursion'"),
    ({"refuse_action": "ignore"}, "option 'refuse_action'"),
    ({"udp_batch": "on"}, "option 'udp_batch'"),
    ({"rate_limit": -1}, "out of range"),
    ({"rate_limit_window": 0}, "out of range"),
    ({"rate_limit_slip": 11}, "out of range"),
    ({"max_amplification": "x"}, "whole number"),
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
    with pytest.raises(ConfigError, match=f"{path}:1: unknown option 'cache_sise'"):
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
    config = cfg.with_system_defaults(cfg.build({"upstream": []}, env={}))
    assert config.catalog == cfg.EMBEDDED_CATALOG and config.zones == cfg.EMBEDDED_ZONES


def test_resolv_conf_skips_wildcard_self(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.9\nsearch x\n")
    assert cfg.system_upstreams((Endpoint("0.0.0.0", 53),), conf) == (Endpoint("192.0.2.9", 53),)
    assert cfg.system_upstreams((Endpoint("0.0.0.0", 5353),), conf)[0].host == "127.0.0.53"
    assert cfg.system_upstreams((Endpoint("127.0.0.1", 53),), tmp_path / "missing") == ()


def test_reading_toml_is_apart_from_checking_it(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("cache_size = -1\nno_such_option = 1\n")
    raw = cfg.read_toml(path)  # reads without judging the values
    assert raw == {"cache_size": -1, "no_such_option": 1}
    with pytest.raises(ConfigError) as err:
        cfg.convert({"cache_size": raw["cache_size"]}, "/etc/gw.toml")
    assert str(err.value) == "/etc/gw.toml: option 'cache_size': -1 is out of range 0-100000000"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"this is not toml", "not valid TOML"),
        # Issue 9: these two ended in a traceback (UnicodeDecodeError, RecursionError).
        (b'log_level = "\xff"\n', "not valid TOML: not UTF-8"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML: nested too deeply"),
    ],
)
def test_unreadable_toml_names_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "gw.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        cfg.read_toml(path)
    assert str(err.value).startswith(f"{path}: ")


def test_build_reads_no_system_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_resolv_conf(*_: object) -> tuple[Endpoint, ...]:
        raise AssertionError("build() must not read resolv.conf")

    monkeypatch.setattr(cfg, "system_upstreams", no_resolv_conf)
    config = cfg.build({}, env={})
    assert (config.upstream, config.catalog, config.zones) == (None, None, None)
    monkeypatch.undo()
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.7\n")
    resolved = cfg.with_system_defaults(config, conf)
    assert resolved.upstream == (Endpoint("192.0.2.7", 53),)  # our own 127.0.0.1:53 skipped


def test_system_defaults_keep_what_was_given(tmp_path: Path) -> None:
    given = cfg.build(
        {"upstream": ["192.0.2.1"], "catalog": str(tmp_path), "zones": str(tmp_path)}, env={}
    )
    assert cfg.with_system_defaults(given, tmp_path / "missing") == given
    consul = cfg.build({"consul": "127.0.0.1:8500"}, env={})
    with_consul = cfg.with_system_defaults(consul, tmp_path / "missing")
    assert with_consul.catalog is None  # Consul replaces the embedded catalog


ENVIRONMENT = [(opt.env, opt.name) for opt in cfg.OPTIONS if opt.env is not None]


def test_the_consul_environment_variables_are_declared() -> None:
    assert dict(ENVIRONMENT) == {
        "CONSUL_HTTP_ADDR": "consul",
        "CONSUL_HTTP_TOKEN": "consul_token",
        "CONSUL_CACERT": "consul_ca",
        "CONSUL_CLIENT_CERT": "consul_cert",
        "CONSUL_CLIENT_KEY": "consul_key",
        "CONSUL_HTTP_SSL_VERIFY": "consul_tls_verify",
    }


@pytest.mark.parametrize(("variable", "name"), ENVIRONMENT)
def test_environment_variable_sets_its_option(variable: str, name: str) -> None:
    assert cfg.read_environment({variable: "v", "UNRELATED": "x"}) == {name: "v"}
    assert cfg.read_environment({variable: ""}) == {}  # empty is unset


def test_environment_loses_to_the_file_and_the_file_to_flags(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('consul = "10.0.0.2:8500"\nconsul_tls_verify = true\n')
    env = {"CONSUL_HTTP_ADDR": "10.0.0.1:8500", "CONSUL_HTTP_SSL_VERIFY": "false"}
    config = cfg.build({}, config_file=path, env=env)
    assert (config.consul, config.consul_tls_verify) == ("http://10.0.0.2:8500", True)
    config = cfg.build({"consul_tls_verify": False}, config_file=path, env=env)
    assert config.consul_tls_verify is False


def flag_of(opt: Option) -> str:
    return "--" + opt.name.replace("_", "-")


@pytest.mark.parametrize("opt", cfg.OPTIONS, ids=lambda opt: opt.name)
def test_every_option_has_its_flag(opt: Option) -> None:
    """Switches have --x/--no-x, repeatables append, the rest keep the last value."""
    cli = parser()
    flag = flag_of(opt)
    assert getattr(cli.parse_args([]), opt.name) is None  # not given: a later source decides
    if opt.is_switch:
        assert getattr(cli.parse_args([flag]), opt.name) is True
        assert getattr(cli.parse_args(["--no-" + flag[2:]]), opt.name) is False
    elif opt.repeatable:
        assert getattr(cli.parse_args([flag, "a", flag, "b"]), opt.name) == ["a", "b"]
    else:
        assert getattr(cli.parse_args([flag, "a", flag, "b"]), opt.name) == "b"


def test_the_parser_has_no_flag_beyond_the_declarations() -> None:
    dests = {
        action.dest for action in parser()._actions if not isinstance(action, argparse._HelpAction)
    }
    assert dests == {opt.name for opt in cfg.OPTIONS} | {"config"}


def test_help_shows_meaning_and_default() -> None:
    text = " ".join(parser().format_help().split())
    assert "--consul-token TOKEN ACL token, sent as X-Consul-Token, never logged" in text
    assert "(default: $CONSUL_HTTP_SSL_VERIFY, else on)" in text


def test_readme_option_table_is_the_generated_one() -> None:
    """README.md cannot drift: regenerate with ``python -m gateway.options --markdown``."""
    lines = README.read_text().splitlines()
    start = lines.index(README_TABLE_HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert "\n".join(lines[start:end]) + "\n" == cfg.markdown_table()


def test_markdown_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cfg.main(["--markdown"]) == 0
    assert capsys.readouterr().out == cfg.markdown_table()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("forward_timeout", 10**400),  # beyond any float: OverflowError before issue 9
        ("catalog", "x" * 5000),  # a name too long for the file system: OSError before
        ("zones", "x" * 5000),
    ],
)
def test_values_beyond_the_machine_are_config_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"f.toml: option '{name}'"):
        cfg.convert({name: value}, "f.toml")


def test_listen_defaults_to_both_loopback_addresses_as_dnsmasq() -> None:
    assert cfg.Config().listen == (Endpoint("127.0.0.1", 53), Endpoint("::1", 53))


def test_listen_takes_interface_names() -> None:
    listen = cfg.convert({"listen": ["lo", "lo:5353", "127.0.0.1:53"]}, "test")["listen"]
    assert listen == (Endpoint("lo", 53), Endpoint("lo", 5353), Endpoint("127.0.0.1", 53))
    assert [ep.is_interface for ep in listen] == [True, True, False]
    resolved = cfg.resolve_interfaces(listen)
    assert Endpoint("127.0.0.1", 53) in resolved and Endpoint("127.0.0.1", 5353) in resolved
    assert len(resolved) == len(set(resolved))  # lo's 127.0.0.1:53 and the one given: once
    with pytest.raises(ConfigError, match="option 'listen': no interface named 'nosuch0'"):
        cfg.resolve_interfaces((Endpoint("nosuch0", 53),))


def test_the_demo_zone_belongs_to_the_embedded_default_only(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    plain = cfg.with_system_defaults(cfg.build({"upstream": []}, env={}), missing)
    assert plain.zones == cfg.EMBEDDED_ZONES
    consul = cfg.build({"upstream": [], "consul": "127.0.0.1:8500"}, env={})
    assert cfg.with_system_defaults(consul, missing).zones is None
    user = cfg.build({"upstream": []}, env={})
    assert cfg.with_system_defaults(user, missing, user_config=True).zones is None
    named = cfg.build({"upstream": [], "consul": "x:1", "zones": str(cfg.EMBEDDED_ZONES)}, env={})
    assert cfg.with_system_defaults(named, missing).zones == cfg.EMBEDDED_ZONES


def test_dnsmasq_rules_as_options() -> None:
    config = cfg.build(
        {
            "server": ["/corp.test/127.0.0.1#5300", "192.0.2.53"],
            "rev_server": ["10.0.0.0/8,127.0.0.1"],
            "local": ["/lan/"],
            "address": ["/ads.test/#"],
            "rebind_domain_ok": ["/a.test/b.test/", "c.test"],
        },
        env={},
    )
    assert [r.domains for r in config.server] == [("corp.test",), ()]
    assert config.rev_server[0].domains == ("10.in-addr.arpa",)
    assert config.local[0].domains == ("lan",)
    assert len(config.address[0].addresses) == 2
    assert config.rebind_domain_ok == ("a.test", "b.test", "c.test")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"server": ["/x.test/nowhere"]}, "option 'server': '/x.test/nowhere'"),
        ({"rev_server": ["10.0.0.0/8"]}, "option 'rev_server': '10.0.0.0/8' is not CIDR"),
        ({"local": ["lan"]}, "option 'local': 'lan' is not /domain/"),
        ({"address": ["/x/y/"]}, None),  # fine: NXDOMAIN for x and y
        ({"rebind_domain_ok": ["//"]}, "option 'rebind_domain_ok': '//' names no domain"),
        ({"strict_order": True, "all_servers": True}, "exclude each other"),
        ({"neg_ttl": -1}, "option 'neg_ttl': -1 is out of range"),
    ],
)
def test_bad_dnsmasq_rules_name_the_option(values: dict[str, object], message: str | None) -> None:
    if message is None:
        cfg.build(values, env={})
        return
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        cfg.build(values, env={})
    assert str(err.value).startswith("command line: ")


def test_resolv_file_and_no_resolv(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.7\n")
    config = cfg.build({"resolv_file": str(conf)}, env={})
    assert config.resolv and config.poll_resolv
    assert cfg.with_system_defaults(config).upstream == (Endpoint("192.0.2.7", 53),)
    off = cfg.build({"resolv_file": str(conf), "resolv": False}, env={})
    assert cfg.with_system_defaults(off).upstream == ()
    # An explicit upstream list replaces the resolv file, so it is not watched either.
    assert not cfg.build({"upstream": ["192.0.2.1"]}, env={}).resolv
