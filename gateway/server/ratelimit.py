"""What a limited client's UDP answer becomes: sent, cut, slipped or dropped.

Two bounds for UDP answers to clients that are not loopback (a UDP source
address is not proof of anything, so these answers may be reflected at a
forged victim):

* Response-rate limiting, BIND's RRL model: an account per (client block,
  answer) holds up to ``rate`` responses, refilled at ``rate`` per second.
  A response the account cannot pay for is *limited*: every ``slip``-th
  limited response goes out as a tiny TC=1 reply with no records (a real
  client retries over TCP, where nothing is limited), the others are
  dropped. The account may fall to ``-window * rate``, so a block that
  floods stays limited until it has been quiet for up to ``window``
  seconds. "Answer" is the question for NOERROR (answers and NODATA), one
  per block for all NXDOMAINs (random names cannot open new accounts) and
  one per block for all errors, as BIND groups them.
* The amplification bound: an answer larger than ``factor`` times the query
  is cut at a record boundary with TC=1 (``codec.truncate``). RFC 7873
  cookies, which would let a client prove its address, are not
  implemented, so every limited client counts as one without a cookie.

Pure logic over an injected clock; the transport calls
:meth:`UdpLimits.outgoing` for limited clients only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, MutableMapping

from gateway.dns import codec

Clock = Callable[[], float]

SEND = 0
SLIP = 1
DROP = 2
# Accounts kept at most (BIND's max-table-size); about 300 bytes each with
# its key (tracemalloc), so at most ~15 MB.
MAX_ACCOUNTS = 50_000
# When full of accounts that are all active, forget this share of the oldest.
_EVICT_SHARE = 10
_RCODE_MASK = 0x0F
_NOERROR = 0
_NXDOMAIN = 3
_HEADER_LEN = 12
# Answer keys that can never equal a question (which starts with a label
# length byte, at most 63).
NXDOMAIN_KEY = b"nxdomain"
ERROR_KEY = b"error"
# An account: [balance in responses, time of last update, limited responses seen].
_BALANCE = 0
_UPDATED = 1
_LIMITED = 2


def answer_key(response: bytes) -> bytes:
    """Which answer a response is, for its account (see the module docstring)."""
    if len(response) <= _HEADER_LEN:
        return ERROR_KEY
    rcode = response[3] & _RCODE_MASK
    if rcode == _NXDOMAIN:
        return NXDOMAIN_KEY
    if rcode != _NOERROR:
        return ERROR_KEY
    zero = response.find(0, _HEADER_LEN)
    if zero < 0:
        return ERROR_KEY
    # The name case-folded (0x20 mixing must not open new accounts), type and class as sent.
    return response[_HEADER_LEN:zero].lower() + response[zero : zero + 5]


class ResponseRateLimiter:
    """BIND-style response-rate limiting; :meth:`verdict` is SEND, SLIP or DROP."""

    def __init__(
        self,
        rate: int,
        window: float,
        slip: int,
        clock: Clock,
        *,
        max_accounts: int = MAX_ACCOUNTS,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = float(rate)
        self._window = window
        self._floor = -window * rate
        self._slip = slip
        self._clock = clock
        self._max = max_accounts
        self._accounts: dict[tuple[bytes, bytes], list[float]] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def verdict(self, block: bytes, response: bytes) -> int:
        key = (block, answer_key(response))
        now = self._clock()
        account = self._accounts.get(key)
        if account is None:
            if len(self._accounts) >= self._max:
                self._make_room(now)
            account = self._accounts[key] = [self._rate, now, 0.0]
        else:
            elapsed = now - account[_UPDATED]
            if elapsed > 0:
                account[_UPDATED] = now
                refilled = account[_BALANCE] + elapsed * self._rate
                account[_BALANCE] = min(refilled, self._rate)
        account[_BALANCE] -= 1.0
        if account[_BALANCE] >= 0.0:
            return SEND
        if account[_BALANCE] < self._floor:
            account[_BALANCE] = self._floor
        if self._slip:
            # The first limited response slips, then every slip-th after it.
            seen = int(account[_LIMITED])
            account[_LIMITED] = float((seen + 1) % self._slip)
            if seen == 0:
                return SLIP
        return DROP

    def _make_room(self, now: float) -> None:
        # An account untouched for a whole window is back to full: forgetting
        # it changes nothing. Only if every account is active are the oldest
        # forgotten (they restart full, a burst of at most ``rate``).
        window = self._window
        idle = [k for k, a in self._accounts.items() if now - a[_UPDATED] >= window]
        for key in idle:
            del self._accounts[key]
        if len(self._accounts) >= self._max:
            oldest = list(itertools.islice(self._accounts, max(1, self._max // _EVICT_SHARE)))
            for key in oldest:
                del self._accounts[key]


def slip_reply(response: bytes) -> bytes:
    """The response with every record left out and TC=1: header, question, OPT."""
    return codec.truncate(response, 0)


def bound_amplification(response: bytes, query_size: int, factor: int) -> bytes:
    """The response cut to ``factor`` times the query's size (TC=1), when larger."""
    limit = factor * query_size
    if len(response) <= limit:
        return response
    return codec.truncate(response, limit)


class UdpLimits:
    """The rate limit (None: off) and the amplification bound (0: off), with counters.

    Counters: ``rrl_limited`` (responses over the rate), of them
    ``rrl_slipped`` and ``rrl_dropped``; ``amplification_truncated``.
    """

    def __init__(
        self,
        limiter: ResponseRateLimiter | None,
        max_amplification: int,
        counts: MutableMapping[str, int],
    ) -> None:
        self._limiter = limiter
        self._factor = max_amplification
        self._counts = counts

    def outgoing(self, block: bytes, query_size: int, response: bytes) -> bytes | None:
        """What to send to a limited client instead of ``response``; None: nothing."""
        limiter = self._limiter
        if limiter is not None:
            verdict = limiter.verdict(block, response)
            if verdict != SEND:
                self._counts["rrl_limited"] += 1
                if verdict == DROP:
                    self._counts["rrl_dropped"] += 1
                    return None
                self._counts["rrl_slipped"] += 1
                return slip_reply(response)
        factor = self._factor
        if factor and len(response) > factor * query_size:
            self._counts["amplification_truncated"] += 1
            return bound_amplification(response, query_size, factor)
        return response
