"""The forward answerer: the cache in front of the upstreams, and serve-stale.

One question goes: fresh cached answer -> else upstream (the forwarder
coalesces identical questions) -> store the reply as a template -> answer.
When the upstreams fail (no reply, or every one answered SERVFAIL/REFUSED)
an expired answer still inside the serve-stale window answers instead
(RFC 8767); only when there is none does the query fail.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Protocol

from gateway.cache.store import ForwardCache, make_template
from gateway.dns import wire

# What the cached forwarder hands back: a template to patch and size for the
# client; ``raw`` is True for an upstream message too odd to template,
# relayed once as it came (with the client's ID), uncached. None: failed.
Done = Callable[[bytes | None, bool], None]


class Upstreams(Protocol):
    """What the cached forwarder needs of a forwarder (gateway.forward.Forwarder)."""

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        """Sends ``question`` upstream; ``done`` gets the response or None."""


class CachedForwarder:
    """Answers forwarded names from the cache or the upstreams; owns serve-stale."""

    def __init__(
        self,
        cache: ForwardCache,
        upstreams: Upstreams | None,
        *,
        payload: int,
        counts: MutableMapping[str, int],
    ) -> None:
        self.cache = cache
        self.upstreams = upstreams
        self._payload = payload
        self._counts = counts

    def answer(
        self, key: bytes | None, question: bytes, edns: wire.Edns | None, done: Done
    ) -> None:
        """Calls ``done`` now (cache, no upstreams) or when the upstreams answer.

        ``key`` is the fast-path key (None: not cacheable under any key);
        ``question`` the lower-case question (qname wire + qtype + qclass).
        """
        if key is not None:
            cached = self.cache.fresh(key)
            if cached is not None:
                self._counts["cache_hits"] += 1
                done(cached, False)
                return
        upstreams = self.upstreams
        if upstreams is None:
            self._stale_or_fail(key, done)
            return
        self._counts["forwarded"] += 1

        def replied(response: bytes | None) -> None:
            if response is None:
                self._stale_or_fail(key, done)
                return
            if response[3] & 0x0F in (wire.SERVFAIL, wire.REFUSED) and self._stale(key, done):
                # Every upstream refused or failed: RFC 8767 prefers a stale answer.
                return
            made = make_template(response, client_edns=edns, payload=self._payload)
            if made is None:
                done(response, True)
                return
            template, layout = made
            if key is not None:
                self.cache.put(key, template, layout)
            done(template, False)

        upstreams.resolve(question, edns.do if edns is not None else False, replied)

    def _stale(self, key: bytes | None, done: Done) -> bool:
        stale = self.cache.stale(key) if key is not None else None
        if stale is None:
            return False
        self._counts["stale_served"] += 1
        done(stale, False)
        return True

    def _stale_or_fail(self, key: bytes | None, done: Done) -> None:
        if not self._stale(key, done):
            done(None, False)
