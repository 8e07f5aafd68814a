"""Test-only helpers: DNS queries and ``dig`` for assertions (dnsclient), and scripted
in-process upstreams for the forwarder tests (scripted). Real servers come from
``harness``."""
