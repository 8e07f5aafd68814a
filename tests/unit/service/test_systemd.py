"""Reading what systemd passes (LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC): plain values."""

from __future__ import annotations

import pytest

from gateway.service import systemd
from gateway.service.systemd import ActivationError, Notifier, Passed

PID = 4242


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"LISTEN_FDS": "0", "LISTEN_PID": str(PID)}, ()),
        (
            {"LISTEN_FDS": "2", "LISTEN_PID": str(PID), "LISTEN_FDNAMES": "udp:tcp"},
            (Passed(3, "udp"), Passed(4, "tcp")),
        ),
        # No names: systemd's "unknown"; no LISTEN_PID: taken as ours (old systemd).
        ({"LISTEN_FDS": "2"}, (Passed(3, "unknown"), Passed(4, "unknown"))),
        ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, (Passed(3, "a"),)),
        # Meant for the process that forked us.
        ({"LISTEN_FDS": "2", "LISTEN_PID": "1"}, ()),
    ],
)
def test_listen_fds(env: dict[str, str], expected: tuple[Passed, ...]) -> None:
    assert systemd.parse_listen_fds(env, PID) == expected


@pytest.mark.parametrize(
    ("count", "message"), [("two", "is not a number"), ("-1", "out of range"), ("5000", "range")]
)
def test_bad_listen_fds_is_an_error_naming_the_variable(count: str, message: str) -> None:
    with pytest.raises(ActivationError, match=f"LISTEN_FDS=.*{message}"):
        systemd.parse_listen_fds({"LISTEN_FDS": count, "LISTEN_PID": str(PID)}, PID)


def test_the_variables_are_removed_once_read() -> None:
    env = {"LISTEN_FDS": "0", "LISTEN_PID": str(PID), "LISTEN_FDNAMES": "", "OTHER": "x"}
    assert systemd.inherited_sockets(env, PID) == []
    assert env == {"OTHER": "x"}


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/42", b"\0/org/freedesktop/systemd1/notify/42"),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str, address: str | bytes | None) -> None:
    assert systemd.notify_address({"NOTIFY_SOCKET": value}) == address


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID)}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_of_what_systemd_asks(
    env: dict[str, str], interval: float | None
) -> None:
    assert systemd.watchdog_interval(env, PID) == interval


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({}, PID)
    assert not notifier.enabled
    notifier.ready("serving")  # no socket, no error
    notifier.close()
