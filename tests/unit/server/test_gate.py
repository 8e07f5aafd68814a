"""The transport's cache of per-client decisions (no sockets)."""

from __future__ import annotations

import ipaddress
from collections import Counter

from gateway.server import transport
from gateway.server.access import Access, AccessPolicy
from gateway.server.ratelimit import UdpLimits
from tests.unit.server.test_resolver import make


def test_peers_get_the_fast_path_their_access_allows_and_the_cache_is_bounded() -> None:
    resolver, _, _ = make()
    allow = [ipaddress.ip_network("10.0.0.0/8")]
    policy = AccessPolicy(allow, [], limits=True, limit_loopback=False)
    gate = transport.Gate(resolver, policy, UdpLimits(None, 10, Counter()), drop_denied=False)
    fast, client, slow = gate.peer("192.0.2.1")
    assert fast is None and client.access is Access.NONE and client.limited
    fast, client, slow = gate.peer("10.1.2.3")
    assert fast is resolver.answer_fast_local and client.access is Access.LOCAL
    fast, client, slow = gate.peer("127.0.0.1")
    assert fast is resolver.answer_fast and not client.limited
    assert gate.peers["127.0.0.1"] == (fast, client, slow)
    assert slow == resolver.answer_slow
    for i in range(transport.MAX_CACHED_PEERS + 10):
        gate.peer(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(gate.peers) <= transport.MAX_CACHED_PEERS
