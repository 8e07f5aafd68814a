"""The error every start-up problem derives from.

A bad option, a bad zone or catalog file, a bad Consul TLS setting: each
capability raises its own subclass with a message that names the option or
file (and line where there is one); ``__main__`` turns any of them into one
line on stderr and exit code 2. Errors while serving never use these: they
become response codes (``gateway.server.rcodes``).
"""

from __future__ import annotations


class StartupError(Exception):
    """The gateway cannot start as configured; the message says what and where."""
