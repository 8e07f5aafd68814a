"""``--dnsmasq-conf``: dnsmasq's file syntax, includes, and the mapping to our options.

No real files: the reader gets a dict-backed :class:`Files`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from gateway import dnsmasq_conf as dm
from gateway import options as cfg
from gateway.dnsmasq_conf import Context, Directive
from gateway.options import ConfigError, Endpoint


class FakeFiles:
    """Files and folders as a dict: path -> text; a folder is every key below it."""

    def __init__(self, files: dict[str, str], unreadable: frozenset[str] = frozenset()) -> None:
        self.files = files
        self.unreadable = unreadable

    def read_text(self, path: Path) -> str:
        if str(path) in self.unreadable:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        try:
            return self.files[str(path)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)) from None

    def regular_files(self, folder: Path) -> list[str]:
        prefix = str(folder).rstrip("/") + "/"
        names = [k[len(prefix) :] for k in self.files if k.startswith(prefix)]
        if not names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        return [n for n in names if "/" not in n]


def names_and_values(text: str) -> list[tuple[str, str | None]]:
    return [(d.name, d.value) for d in dm.parse_text(text, "f.conf")]


# -- the file syntax -----------------------------------------------------------


def test_lines_comments_and_forms() -> None:
    text = (
        "# a comment\n"
        "\n"
        "   no-resolv   \n"
        "port = 5353   # trailing comment after white space\n"
        "server=/consul/127.0.0.1#8600\n"  # '#' inside a value is not a comment
        "--cache-size=50\n"  # pasted from a command line
        "\tlog-queries\t# tab\n"
    )
    assert names_and_values(text) == [
        ("no-resolv", None),
        ("port", "5353"),
        ("server", "/consul/127.0.0.1#8600"),
        ("cache-size", "50"),
        ("log-queries", None),
    ]


def test_line_numbers_count_comments_and_blanks() -> None:
    found = dm.parse_text("# one\n\nno-hosts\n", "x.conf")
    assert [(d.file, d.line, d.where) for d in found] == [("x.conf", 3, "x.conf:3")]


def test_quotes_hide_comment_and_white_space_and_take_escapes() -> None:
    assert names_and_values('txt-record=a,"b # c\\tq\\"z"\n') == [("txt-record", 'a,b # c\tq"z')]


def test_missing_quote_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r'^f.conf:2: missing "$'):
        dm.parse_text('no-hosts\nserver="1.2.3.4\n', "f.conf")


@pytest.mark.parametrize("line", ["= 5", "two words=1", "--"])
def test_a_line_without_an_option_name_is_an_error(line: str) -> None:
    with pytest.raises(ConfigError, match=r"^f.conf:1: .*bad option"):
        dm.parse_text(line + "\n", "f.conf")


CONF_DIR_CASES = [
    ("a.conf", (), True),
    ("a.conf~", (), False),
    (".hidden.conf", (), False),
    ("#a.conf#", (), False),
    ("a.conf", ("*.conf",), True),
    ("a.bak", ("*.conf",), False),
    ("a.bak", ("*.conf", "*.bak"), True),
    ("a.bak", (".bak",), False),
    ("a.conf", (".bak",), True),
    ("#", (), True),  # one '#' does not start and end a name
]  # fmt: skip


@pytest.mark.parametrize(("name", "extensions", "selected"), CONF_DIR_CASES)
def test_conf_dir_rules(name: str, extensions: tuple[str, ...], selected: bool) -> None:
    assert dm.conf_dir_selects(name, extensions) is selected


# -- includes --------------------------------------------------------------------


def test_conf_file_and_conf_dir_are_read_in_place_and_in_order() -> None:
    files = FakeFiles(
        {
            "/etc/dnsmasq.conf": "cache-size=1\nconf-file=/etc/extra.conf\n"
            "conf-dir=/etc/d,*.conf\nno-hosts\n",
            "/etc/extra.conf": "no-resolv\n",
            "/etc/d/20-b.conf": "domain-needed\n",
            "/etc/d/10-a.conf": "bogus-priv\n",
            "/etc/d/10-a.conf~": "unknown-option\n",
            "/etc/d/README": "not a config file\n",
        }
    )
    found = dm.read_directives(Path("/etc/dnsmasq.conf"), files)
    assert [(d.where, d.name) for d in found] == [
        ("/etc/dnsmasq.conf:1", "cache-size"),
        ("/etc/extra.conf:1", "no-resolv"),
        ("/etc/d/10-a.conf:1", "bogus-priv"),
        ("/etc/d/20-b.conf:1", "domain-needed"),
        ("/etc/dnsmasq.conf:4", "no-hosts"),
    ]


def test_missing_top_file_is_named_like_dnsmasq_does() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^--dnsmasq-conf /nope.conf: cannot read /nope.conf: No such file or directory$",
    ):
        dm.read_directives(Path("/nope.conf"), FakeFiles({}))


def test_missing_included_file_names_the_including_line() -> None:
    files = FakeFiles({"/m.conf": "no-hosts\nconf-file=/gone.conf\n"})
    with pytest.raises(
        ConfigError,
        match=r"^/m.conf:2: conf-file=/gone.conf: cannot read /gone.conf: No such file",
    ):
        dm.read_directives(Path("/m.conf"), files)


def test_unreadable_included_file_says_why() -> None:
    files = FakeFiles(
        {"/m.conf": "conf-file=/secret.conf\n", "/secret.conf": ""}, frozenset({"/secret.conf"})
    )
    with pytest.raises(
        ConfigError, match=r"^/m.conf:1: .*cannot read /secret.conf: Permission denied"
    ):
        dm.read_directives(Path("/m.conf"), files)  # fmt: skip


def test_missing_conf_dir_names_the_line() -> None:
    files = FakeFiles({"/m.conf": "# x\nconf-dir=/no/dir,*.conf\n"})
    with pytest.raises(
        ConfigError,
        match=r"^/m.conf:2: conf-dir=/no/dir,\*.conf: cannot access directory /no/dir: No such",
    ):
        dm.read_directives(Path("/m.conf"), files)


def test_a_file_that_includes_itself_is_an_error_not_a_hang() -> None:
    files = FakeFiles({"/a.conf": "conf-file=/b.conf\n", "/b.conf": "conf-file=/a.conf\n"})
    with pytest.raises(ConfigError, match=r"^/b.conf:1: conf-file=/a.conf: includes itself"):
        dm.read_directives(Path("/a.conf"), files)


def test_servers_file_allows_only_server_lines() -> None:
    files = FakeFiles(
        {"/m.conf": "servers-file=/s.conf\n", "/s.conf": "server=192.0.2.1\nno-hosts\n"}
    )
    with pytest.raises(ConfigError, match=r"^/s.conf:2: no-hosts: only server= and rev-server="):
        dm.read_directives(Path("/m.conf"), files)  # fmt: skip


def test_servers_file_is_read_and_noted() -> None:
    files = FakeFiles({"/m.conf": "servers-file=/s.conf\n", "/s.conf": "server=192.0.2.1\n"})
    out = dm.translate(dm.read_directives(Path("/m.conf"), files), Context())
    assert out.values["server"] == ["192.0.2.1"]
    assert [n.message for n in out.notices] == [
        "/m.conf:1: servers-file=/s.conf: read once at start; SIGHUP does not re-read it"
    ]


# -- the mapping -------------------------------------------------------------------


def translate(text: str, context: Context | None = None) -> dm.Translation:
    return dm.translate(dm.parse_text(text, "f.conf"), context or Context())


# Every option the issue lists, with what it becomes (raw values, before conversion).
MAPPED = [
    ("server=192.0.2.1#5300", "server", ["192.0.2.1#5300"]),
    ("server=/corp/a.b/10.0.0.53", "server", ["/corp/a.b/10.0.0.53"]),
    ("server=/local.lan/#", "server", ["/local.lan/#"]),
    ("rev-server=10.0.0.0/8,10.0.0.53", "rev_server", ["10.0.0.0/8,10.0.0.53"]),
    ("local=/lan/", "local", ["/lan/"]),
    ("local=/lan/10.0.0.53", "server", ["/lan/10.0.0.53"]),  # dnsmasq: local is server
    ("address=/ads.test/0.0.0.0", "address", ["/ads.test/0.0.0.0"]),
    ("no-resolv", "resolv", False),
    ("resolv-file=/run/r.conf", "resolv_file", "/run/r.conf"),
    ("resolv-file", "resolv", False),  # dnsmasq: no name replaces the default with nothing
    ("no-poll", "poll_resolv", False),
    ("no-hosts", "hosts", False),
    ("addn-hosts=/etc/more", "addn_hosts", ["/etc/more"]),
    ("domain-needed", "domain_needed", True),
    ("bogus-priv", "bogus_priv", True),
    ("stop-dns-rebind", "stop_dns_rebind", True),
    ("rebind-domain-ok=/a.test/b.test/", "rebind_domain_ok", ["a.test", "b.test"]),
    ("rebind-domain-ok=c.test", "rebind_domain_ok", ["c.test"]),
    ("listen-address=127.0.0.2,::1", "listen", ["127.0.0.2:53", "[::1]:53"]),
    ("interface=eth0", "listen", ["eth0:53", "lo:53"]),
    ("port=5353", "listen", ["0.0.0.0:5353", "[::]:5353"]),
    ("cache-size=500", "cache_size", "500"),
    ("neg-ttl=60", "neg_ttl", "60"),
    ("local-ttl=5", "local_ttl", "5"),
    ("max-ttl=300", "max_ttl", "300"),
    ("min-cache-ttl=30", "cache_min_ttl", "30"),
    ("min-cache-ttl=7200", "cache_min_ttl", "3600"),  # dnsmasq's own limit
    ("max-cache-ttl=600", "cache_max_ttl", "600"),
    ("no-negcache", "negcache", False),
    ("dns-forward-max=150", "forward_max_inflight", "150"),
    ("edns-packet-max=4096", "udp_max_payload", "4096"),
    ("strict-order", "strict_order", True),
    ("all-servers", "all_servers", True),
    ("log-queries", "log_queries", True),
    ("log-queries=extra", "log_queries", True),
    ("local-service", "allow", ["local"]),
    ("max-tcp-connections=20", "tcp_max_connections", "20"),
    ("no-ident", "chaos", "refuse"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "option", "value"), MAPPED)
def test_each_option_maps(line: str, option: str, value: object) -> None:
    assert translate(line + "\n").values[option] == value


ISSUE_LIST = [
    "server",
    "rev-server",
    "local",
    "address",
    "no-resolv",
    "resolv-file",
    "no-poll",
    "no-hosts",
    "addn-hosts",
    "domain-needed",
    "bogus-priv",
    "stop-dns-rebind",
    "rebind-domain-ok",
    "listen-address",
    "interface",
    "bind-interfaces",
    "port",
    "cache-size",
    "neg-ttl",
    "local-ttl",
    "max-ttl",
    "min-cache-ttl",
    "max-cache-ttl",
    "no-negcache",
    "dns-forward-max",
    "edns-packet-max",
    "strict-order",
    "all-servers",
    "log-queries",
    "local-service",
]


@pytest.mark.parametrize("name", ISSUE_LIST)
def test_every_option_of_the_issue_is_handled(name: str) -> None:
    # bind-interfaces changes nothing here: we always bind each address.
    assert dm.describe(name) == ("warning" if name == "bind-interfaces" else "mapped")
    assert any(line.split("=")[0] == name for line, _, _ in MAPPED) or name == "bind-interfaces"


def test_a_file_without_listening_options_listens_as_dnsmasq_does() -> None:
    assert translate("no-hosts\n").values["listen"] == ["0.0.0.0:53", "[::]:53"]


def test_listen_address_and_interface_and_port_combine() -> None:
    out = translate("port=5300\ninterface=lo\nlisten-address=192.0.2.1\n")
    assert out.values["listen"] == ["192.0.2.1:5300", "lo:5300"]


def test_local_service_host_is_loopback_only() -> None:
    out = translate("local-service=host\nport=5300\n")
    assert out.values["listen"] == ["127.0.0.1:5300", "[::1]:5300"]
    assert out.values["allow"] == ["127.0.0.0/8", "::1/128"]
    assert out.values["allow_recursion"] == ["127.0.0.0/8", "::1/128"]


def test_local_service_with_listen_address_is_a_noted_no_op() -> None:
    out = translate("local-service\nlisten-address=127.0.0.1\n")
    assert "allow" not in out.values
    assert [n.message for n in out.notices] == [
        "f.conf:1: local-service: no effect with interface= or listen-address= (as in dnsmasq)"
    ]


# -- the Consul rule -------------------------------------------------------------


def test_consul_servers_give_way_to_the_live_catalog() -> None:
    ctx = Context(consul_domains=("consul",), consul_url="http://127.0.0.1:8500")
    out = translate(
        "server=/consul/127.0.0.1#8600\nserver=/service.consul/127.0.0.1#8600\n"
        "server=/corp/consul/10.0.0.53\nserver=192.0.2.1\n",
        ctx,
    )
    assert out.values["server"] == ["/corp/10.0.0.53", "192.0.2.1"]
    assert [(n.message.split(":")[1], n.warning) for n in out.notices] == [
        ("1", False),
        ("2", False),
        ("3", False),
    ]
    assert "live catalog of http://127.0.0.1:8500" in out.notices[0].message


def test_consul_servers_are_forwarded_without_a_consul_address() -> None:
    out = translate("server=/consul/127.0.0.1#8600\n")
    assert out.values["server"] == ["/consul/127.0.0.1#8600"]
    assert out.notices == []


def test_the_alt_domain_counts_as_the_consul_domain() -> None:
    ctx = Context(consul_domains=("consul", "cluster.internal"), consul_url="http://c:8500")
    assert "server" not in translate("server=/Cluster.Internal./10.0.0.1#8600\n", ctx).values


# -- errors and warnings --------------------------------------------------------


BAD = [
    ("no-hosts=1", "f.conf:1: no-hosts=1: extraneous parameter"),
    ("cache-size", "f.conf:1: cache-size: missing parameter"),
    ("port=5300\nport=5301", "f.conf:2: port=5301: illegal repeated keyword (first at f.conf:1)"),
    ("port=0", "f.conf:1: port=0: port 0 turns DNS off"),
    ("port=x", "f.conf:1: port=x: 'x' is not a port number"),
    ("listen-address=localhost", "f.conf:1: listen-address=localhost: 'localhost' is not an IP"),
    ("interface=eth*", "f.conf:1: interface=eth*: interface wildcards are not supported"),
    ("log-queries=loud", "f.conf:1: log-queries=loud: the value may be extra, proto or auth"),
    ("local-service=lan", "f.conf:1: local-service=lan: the value may be net or host"),
    ("resolv-file=/a\nresolv-file=/b", "f.conf:2: resolv-file=/b: more than one resolv-file"),
    ("cname=a.test,b.test", "f.conf:1: cname=a.test,b.test: not supported: records defined"),
    ("dnssec", "f.conf:1: dnssec: not supported: DNSSEC validation"),
    ("bogus-nxdomain=192.0.2.1", "f.conf:1: bogus-nxdomain=192.0.2.1: not supported: answers"),
    ("except-interface=eth0", "f.conf:1: except-interface=eth0: not supported"),
    ("no-such-option", "f.conf:1: no-such-option: unknown option"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_lines_name_file_line_and_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        translate(text + "\n")
    assert str(caught.value).startswith(message)


NO_EFFECT = ["dhcp-range=192.0.2.10,192.0.2.50", "enable-tftp", "tftp-root=/srv", "bind-interfaces",
             "user=dnsmasq", "pid-file=/run/dnsmasq.pid", "domain=lan", "enable-ra"]  # fmt: skip


@pytest.mark.parametrize("line", NO_EFFECT)
def test_options_of_no_effect_warn_with_file_and_line(line: str) -> None:
    out = translate("# first\n" + line + "\n")
    assert len(out.notices) == 1
    notice = out.notices[0]
    assert notice.warning
    assert notice.message.startswith(f"f.conf:2: {line}: no effect here: ")


# -- conversion and precedence ------------------------------------------------------


def test_a_bad_value_names_its_file_and_line() -> None:
    files = FakeFiles({"/m.conf": "port=53\nconf-file=/x.conf\n", "/x.conf": "\n\ncache-size=-1\n"})
    with pytest.raises(ConfigError, match=r"^/x.conf:3: cache-size=-1: -1 is out of range 0-"):
        dm.load(Path("/m.conf"), Context(), files)  # fmt: skip


def test_a_bad_listen_value_names_the_line() -> None:
    files = FakeFiles({"/m.conf": "port=53\nlisten-address=127.0.0.1\n"})
    values, _ = dm.load(Path("/m.conf"), Context(), files)
    assert values["listen"] == (Endpoint("127.0.0.1", 53),)


def existing(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in {o.name for o in cfg.OPTIONS}}


def test_precedence_defaults_dnsmasq_environment_toml_flags(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("cache-size=11\nmax-cache-ttl=600\nmin-cache-ttl=5\nlisten-address=127.0.0.9\n")
    toml = tmp_path / "gw.toml"
    toml.write_text("cache_max_ttl = 700\n")
    env = {"CONSUL_HTTP_ADDR": "127.0.0.1:8500"}
    config = cfg.build({"dnsmasq_conf": str(conf), "cache_min_ttl": "6"}, config_file=toml, env=env)
    assert config.cache_size == 11  # only the dnsmasq file says it
    assert config.cache_max_ttl == 700  # TOML over dnsmasq
    assert config.cache_min_ttl == 6  # flag over dnsmasq
    assert config.listen == (Endpoint("127.0.0.9", 53),)
    assert config.consul == "http://127.0.0.1:8500"
    flagged = cfg.build({"dnsmasq_conf": str(conf), "listen": ["127.0.0.1:5353"]}, env={})
    assert flagged.listen == (Endpoint("127.0.0.1", 5353),)  # a flag replaces the whole list


def test_the_dnsmasq_file_may_be_named_in_toml(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("cache-size=12\nport=5300\n")
    toml = tmp_path / "gw.toml"
    toml.write_text(f'dnsmasq_conf = "{conf}"\n')
    assert cfg.build({}, config_file=toml, env={}).cache_size == 12


def test_build_hands_back_the_notices(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("port=5300\ndhcp-range=192.0.2.10,192.0.2.50\n")
    notices: list[dm.Notice] = []
    cfg.build({"dnsmasq_conf": str(conf)}, env={}, notices=notices)
    assert [n.message for n in notices] == [
        f"{conf}:2: dhcp-range=192.0.2.10,192.0.2.50: no effect here: DHCP is not served here"
    ]


def test_consul_from_the_environment_takes_over_the_consul_servers(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("port=5300\nserver=/consul/127.0.0.1#8600\n")
    notices: list[dm.Notice] = []
    cfg.build(
        {"dnsmasq_conf": str(conf)}, env={"CONSUL_HTTP_ADDR": "127.0.0.1:8500"}, notices=notices
    )
    assert [n.warning for n in notices] == [False]
    assert notices[0].message.startswith(f"{conf}:2: server=/consul/127.0.0.1#8600: consul ")


def test_directive_error_format() -> None:
    d = Directive("a.conf", 7, "port", "x")
    assert str(d.error("bad")) == "a.conf:7: port=x: bad"
