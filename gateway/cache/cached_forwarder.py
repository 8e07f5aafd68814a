"""The forward answerer: the cache in front of the upstreams, and serve-stale.

One question goes: fresh cached answer -> else upstream (the forwarder
coalesces identical questions) -> store the reply as a template -> answer.
When the upstreams fail (no reply, or every one answered SERVFAIL/REFUSED)
an expired answer still inside the serve-stale window answers instead
(RFC 8767); only when there is none does the query fail. An upstream reply
that cannot be made into a template (it does not parse) is a failure too:
it is never relayed.

The client-response timer (RFC 8767 5, "stale-answer-client-timeout"): when
an expired answer is kept and the upstreams have not answered within
``stale_timeout``, the waiting client gets the stale answer then; the
upstream query goes on, and its answer, when it comes, refreshes the cache.

Rebinding protection (``--stop-dns-rebind``, ``gateway.forward.private``):
a reply the caller asks to check that holds a private address becomes an
empty NOERROR, which is neither cached nor made stale-servable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Protocol

from gateway.cache.store import ForwardCache, make_template
from gateway.dns import verify, wire
from gateway.forward import private
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# What the cached forwarder hands back: a template to patch and size for the
# client (a whole message, one question); None: the question failed.
Done = Callable[[bytes | None], None]


class Upstreams(Protocol):
    """What the cached forwarder needs of a forwarder (gateway.forward.Forwarder)."""

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        """Sends ``question`` upstream; ``done`` gets the response or None."""


class Timer(Protocol):
    """A scheduled call that can be called off (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


# Schedules a call after a delay in seconds (``loop.call_later``).
CallLater = Callable[[float, Callable[[], None]], Timer]


class CachedForwarder:
    """Answers forwarded names from the cache or the upstreams; owns serve-stale."""

    def __init__(
        self,
        cache: ForwardCache,
        upstreams: Upstreams | None,
        *,
        payload: int,
        counts: MutableMapping[str, int],
        stale_timeout: float = 0.0,
        call_later: CallLater | None = None,
    ) -> None:
        """``stale_timeout`` > 0 with ``call_later`` turns the client-response timer on."""
        self.cache = cache
        self.upstreams = upstreams
        self._payload = payload
        self._counts = counts
        self._log = RateLimitedLog(log, counts=counts)
        self._stale_timeout = stale_timeout if call_later is not None else 0.0
        self._call_later = call_later

    def answer(
        self,
        key: bytes | None,
        question: bytes,
        edns: wire.Edns | None,
        done: Done,
        *,
        via: Upstreams | None = None,
        check_rebind: bool = False,
        nxdomain_as_nodata: bool = False,
    ) -> None:
        """Calls ``done`` now (cache, no upstreams) or when the upstreams answer.

        ``key`` is the fast-path key (None: not cacheable under any key);
        ``question`` the lower-case question (qname wire + qtype + qclass).
        ``via``: the upstreams of this name's domain (``--server /dom/``)
        instead of the standard ones; one name always has the same
        upstreams, so the cache needs no other key. ``check_rebind``: drop
        a reply with private addresses (``--stop-dns-rebind``).
        ``nxdomain_as_nodata``: the name has local addresses (``--address``),
        so an upstream's NXDOMAIN is relayed as NOERROR, as dnsmasq does.
        ``done`` is called exactly once.
        """
        if key is not None:
            cached = self.cache.fresh(key)
            if cached is not None:
                self._counts["cache_hits"] += 1
                done(cached)
                return
        upstreams = self.upstreams if via is None else via
        if upstreams is None:
            self._stale_or_fail(key, done)
            return
        self._counts["forwarded"] += 1
        answered = False
        timer: Timer | None = None

        def stale_now() -> None:
            # The client has waited long enough: stale if there is any; the
            # upstream query goes on and refreshes the cache.
            nonlocal answered
            if not answered and self._stale(key, done):
                answered = True
                self._counts["stale_on_timer"] += 1

        def replied(response: bytes | None) -> None:
            nonlocal answered
            if timer is not None:
                timer.cancel()
            if nxdomain_as_nodata and response is not None and response[3] & 0x0F == wire.NXDOMAIN:
                response = response[:3] + bytes((response[3] & 0xF0,)) + response[4:]
            template = self._take(key, response, edns, check_rebind)
            if answered:
                return
            answered = True
            if template is None:
                self._stale_or_fail(key, done)
            elif template[3] & 0x0F in (wire.SERVFAIL, wire.REFUSED) and self._stale(key, done):
                pass  # every upstream refused or failed: RFC 8767 prefers a stale answer
            else:
                done(template)

        # The fresh lookup above failed, so a kept entry is an expired one.
        if self._stale_timeout > 0 and key is not None and key in self.cache.entries:
            assert self._call_later is not None
            timer = self._call_later(self._stale_timeout, stale_now)
        upstreams.resolve(question, edns.do if edns is not None else False, replied)

    def _take(
        self,
        key: bytes | None,
        response: bytes | None,
        edns: wire.Edns | None,
        check_rebind: bool = False,
    ) -> bytes | None:
        """The response as a template, stored when cacheable; None when there is none to use."""
        if response is None:
            return None
        try:
            if check_rebind:
                layout = verify.walk_strict(response)  # the forwarder checked it walks
                if private.rebinding(response, layout):
                    self._counts["rebind_blocked"] += 1
                    emptied = make_template(
                        private.emptied(response, layout), client_edns=edns, payload=self._payload
                    )
                    return None if emptied is None else emptied[0]
            made = make_template(response, client_edns=edns, payload=self._payload)
            if made is None:
                self._counts["upstream_unusable"] += 1
                return None
            template, layout = made
            if key is not None:
                self.cache.put(key, template, layout)
            return self.cache.for_client(template, layout)
        except Exception as exc:  # a bug must not leave the client without any reply
            self._counts["internal_errors"] += 1
            # An upstream's bytes can trigger it as often as it likes: rate-limited.
            self._log.error("cache_store_bug", "storing an upstream reply failed", exc_info=exc)
            return None

    def _stale(self, key: bytes | None, done: Done) -> bool:
        stale = self.cache.stale(key) if key is not None else None
        if stale is None:
            return False
        self._counts["stale_served"] += 1
        done(stale)
        return True

    def _stale_or_fail(self, key: bytes | None, done: Done) -> None:
        if not self._stale(key, done):
            done(None)
