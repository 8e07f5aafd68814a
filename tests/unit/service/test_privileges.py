"""--user/--group lookups: errors name the option (the switch itself: integration test)."""

from __future__ import annotations

import grp
import pwd

import pytest

from gateway.service import privileges
from gateway.service.privileges import PrivilegeError


def test_the_user_and_its_group_are_looked_up() -> None:
    nobody = pwd.getpwnam("nobody")
    identity = privileges.resolve("nobody", None)
    assert (identity.uid, identity.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert identity.group == grp.getgrgid(nobody.pw_gid).gr_name


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("no-such-user-here", None, "option 'user': no user"),
        ("nobody", "no-such-group-here", "option 'group': no group"),
        ("root", None, "is root"),
    ],
)
def test_bad_names_are_refused(user: str, group: str | None, message: str) -> None:
    with pytest.raises(PrivilegeError, match=message):
        privileges.resolve(user, group)
