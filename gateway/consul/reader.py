"""Every request the watcher makes: counted, checked for staleness, told to liveness.

Reads are ``stale`` (any server answers, so leader elections go
unnoticed); a reply whose ``X-Consul-LastContact`` exceeds
``consul_max_stale`` is asked again of the leader. Requests to the local
datacenter tell :class:`~gateway.consul.liveness.Liveness` whether Consul
answers; remote-datacenter failures say nothing about the local agent.
ACL trouble (a denial, silent filtering) is logged once, with the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.catalog.model import peer_of
from gateway.consul.http import (
    ConsulHTTP,
    ConsulTransportError,
    HTTPResult,
    UnknownDatacenter,
    status_error,
)
from gateway.consul.liveness import Liveness

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
# Consul adds up to wait/16 of jitter to a blocking query; this on top.
BLOCKING_MARGIN_S = 5.0
ACL_HINT = "the token needs service:read, node:read and query:read (deploy/consul-acl-policy.hcl)"


def too_stale(last_contact_ms: int | None, max_stale_s: float) -> bool:
    """Whether a stale read lags its leader by more than we accept."""
    return last_contact_ms is not None and last_contact_ms > max_stale_s * 1000.0


def read_params(
    datacenter: str, *, index: int = 0, wait_s: float = 0.0, stale: bool = True
) -> list[tuple[str, str]]:
    """Query parameters of a read: dc (or cluster peer), blocking index and
    wait, consistency. A peer's data is imported into the local datacenter."""
    peer = peer_of(datacenter)
    params = [("dc", datacenter)] if peer is None else [("peer", peer)]
    if index > 0:
        params += [("index", str(index)), ("wait", f"{round(wait_s * 1000)}ms")]
    if stale:
        # Any server may answer: no leader needed (leader elections).
        params.append(("stale", ""))
    return params


class Reader:
    """GETs to Consul with the counters the metrics show."""

    def __init__(
        self,
        http: ConsulHTTP,
        liveness: Liveness,
        *,
        local: str,
        max_stale_s: float,
        token_set: bool,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        blocking_margin_s: float = BLOCKING_MARGIN_S,
    ) -> None:
        self._http = http
        self._liveness = liveness
        self._local = local
        self._max_stale_s = max_stale_s
        self._token_set = token_set
        self._request_timeout_s = request_timeout_s
        self._blocking_margin_s = blocking_margin_s
        self._denied_logged = False
        self._filtered_logged = False
        self.requests = 0
        self.inflight = 0  # requests awaiting their answer now
        self.inflight_peak = 0
        self.errors = 0
        self.stale_retries = 0

    async def read(self, path: str, dc: str, *, index: int = 0, wait_s: float = 0.0) -> HTTPResult:
        """A stale read, blocking up to ``wait_s`` when ``index``; once more of
        the leader when the answer is too stale."""
        if index:
            timeout_s = wait_s + wait_s / 16 + self._blocking_margin_s
        else:
            timeout_s = self._request_timeout_s
        # A peer's data lives in the local agent's datacenter.
        local = dc == self._local or peer_of(dc) is not None
        params = read_params(dc, index=index, wait_s=wait_s)
        result = await self.request(path, params, timeout_s=timeout_s, local=local)
        if too_stale(result.last_contact_ms, self._max_stale_s):
            self.stale_retries += 1
            params = read_params(dc, index=index, wait_s=wait_s, stale=False)
            result = await self.request(path, params, timeout_s=timeout_s, local=local)
        return result

    async def request(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        timeout_s: float | None = None,
        local: bool = True,
    ) -> HTTPResult:
        """One GET; ``local`` requests also tell whether Consul is reachable.

        Failures of remote-datacenter requests say nothing about the local
        agent, so they never make the local view go stale.
        """
        timeout_s = self._request_timeout_s if timeout_s is None else timeout_s
        query = list(params)
        self.requests += 1
        self.inflight += 1
        self.inflight_peak = max(self.inflight_peak, self.inflight)
        try:
            result = await self._http.get(path, query, timeout_s)
        except ConsulTransportError as exc:
            self.errors += 1
            if local:
                self._liveness.mark_down(str(exc))
            raise
        finally:
            self.inflight -= 1
        log.debug(
            "GET %s %s: %d, index %s, %d bytes",
            path,
            query,
            result.status,
            result.index,
            len(result.body),
        )
        if result.status == 200:
            self._liveness.mark_up()
            self._check_acl_filtering(path, result)
            return result
        self.errors += 1
        error = status_error(result.status, result.body)
        if result.status < 500 or isinstance(error, UnknownDatacenter):
            self._liveness.mark_up()  # Consul answered: it is there
        elif local:
            self._liveness.mark_down(str(error))
        if result.status == 403 and not self._denied_logged:
            self._denied_logged = True
            log.error("Consul denied %s: %s", path, ACL_HINT)
        raise error

    def _check_acl_filtering(self, path: str, result: HTTPResult) -> None:
        """Silent ACL filtering looks like "no such service": say so, once."""
        if self._filtered_logged:
            return
        if result.filtered:
            self._filtered_logged = True
            log.warning("Consul filtered the answer to %s by ACLs: %s", path, ACL_HINT)
        elif result.default_deny and not self._token_set:
            self._filtered_logged = True
            log.warning("Consul's default ACL policy is deny and no token is set: %s", ACL_HINT)
