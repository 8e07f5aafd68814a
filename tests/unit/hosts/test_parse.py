"""The hosts(5) format: good lines, bad lines named by file and line."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.hosts.parse import parse, valid_name

TEXT = """\
# comment line
127.0.0.1\tlocalhost
192.0.2.5 Myhost myhost.example.  # trailing comment
2001:db8::5 myhost
not-an-address somename
300.1.1.1 x
192.0.2.9
192.0.2.10 good bad_name! ok.
fe80::1%eth0 scoped

"""


def test_lines_and_warnings() -> None:
    lines, warnings = parse(TEXT, "/tmp/h")
    assert [(str(line.address), line.names, line.line) for line in lines] == [
        ("127.0.0.1", ("localhost",), 2),
        ("192.0.2.5", ("myhost", "myhost.example"), 3),
        ("2001:db8::5", ("myhost",), 4),
        ("192.0.2.10", ("good", "ok"), 8),
    ]
    assert warnings == [
        "bad address at /tmp/h line 5",
        "bad address at /tmp/h line 6",
        "no name at /tmp/h line 7",
        "bad name at /tmp/h line 8: 'bad_name!'",
        "bad address at /tmp/h line 9",
    ]
    assert lines[2].address == ipaddress.ip_address("2001:db8::5")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Host", "host"),
        ("a.b.", "a.b"),
        ("under_score", "under_score"),
        ("a..b", None),
        (".", None),
        ("x" * 64, None),
        ("a." * 127 + "b", None),
        ("caf\ufffd", None),
    ],
)
def test_names(text: str, expected: str | None) -> None:
    assert valid_name(text) == expected
