"""``--user``/``--group``: give up root once the listening sockets are bound.

Port 53 needs root (or CAP_NET_BIND_SERVICE) only for ``bind``; answering
needs nothing. So the gateway binds as root, then drops to the named user
before the first query is read: supplementary groups first (they would
otherwise keep root's), then the group, then the user — in this order, as
setgid is no longer allowed once the user is not root. Dropping every uid
(real, effective, saved) to a non-zero one also clears every capability
(capabilities(7), "Effect of user ID changes on capabilities"), and the
check afterwards makes sure there is no way back to root.

:func:`resolve` is pure lookups; :func:`drop` is the edge.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from gateway.errors import StartupError

log = logging.getLogger(__name__)


class PrivilegeError(StartupError):
    """The user or group does not exist, or the switch to them failed."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who to become: names for the log, ids for the system calls."""

    user: str
    uid: int
    group: str
    gid: int


def resolve(user: str, group: str | None) -> Identity:
    """The ids of ``user`` and ``group`` (default: the user's primary group)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"option 'user': no user {user!r} on this system") from None
    if group is None:
        gid = entry.pw_gid
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"option 'group': no group {group!r} on this system") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"option 'user': {user!r} is root; name an unprivileged user")
    return Identity(user, entry.pw_uid, group, gid)


def drop(identity: Identity) -> None:
    """Becomes ``identity`` for good, or raises :class:`PrivilegeError`.

    Not root: only allowed when we already are that user and group (e.g.
    systemd's ``User=`` together with ``--user``), so a unit and a config
    that agree do not fail.
    """
    if os.geteuid() != 0:
        if os.getuid() == identity.uid and os.getgid() == identity.gid:
            return
        raise PrivilegeError(
            f"option 'user': switching to {identity.user!r} needs root "
            f"(running as uid {os.geteuid()})"
        )
    try:
        os.setgroups([identity.gid])
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    except OSError as exc:
        raise PrivilegeError(f"option 'user': cannot switch to {identity.user!r}: {exc}") from None
    if 0 in os.getresuid() or 0 in os.getresgid():
        raise PrivilegeError(f"option 'user': still root after switching to {identity.user!r}")
    try:
        os.setuid(0)
    except PermissionError:
        pass  # what we want: no way back
    else:
        raise PrivilegeError("option 'user': could become root again after dropping privileges")
    log.info("running as user %s (%d), group %s (%d)", *_shown(identity))


def _shown(identity: Identity) -> tuple[str, int, str, int]:
    return identity.user, identity.uid, identity.group, identity.gid
