"""The HTTP edge of the Consul watcher: one py-consul asyncio client, errors, TLS.

Nothing here knows about watches or views; :mod:`gateway.consul.reader`
drives it through the narrow :class:`ConsulHTTP` protocol (a fake in unit
tests). The Consul options that can be wrong at start-up (address, TLS
files) are checked here and raise :class:`ConsulSetupError`.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import consul
import consul.aio
import consul.base

from gateway.errors import StartupError
from gateway.options import Config

DEFAULT_PORTS = {"http": 8500, "https": 8501}
NO_PATH_TO_DC = "No path to datacenter"


# -- errors -------------------------------------------------------------------


class ConsulSetupError(StartupError):
    """A Consul option the watcher cannot start with; the message names it."""


class ConsulError(Exception):
    """A request that gave no usable answer."""


class ConsulTransportError(ConsulError):
    """No HTTP answer at all: refused, reset, timed out, TLS failure."""


class ConsulStatusError(ConsulError):
    """Consul answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body.strip()[:200]}")
        self.status = status


class UnknownDatacenter(ConsulStatusError):
    """HTTP 500 "No path to datacenter": Consul DNS answers NXDOMAIN for it."""


def status_error(status: int, body: str) -> ConsulStatusError:
    if status == 500 and NO_PATH_TO_DC in body:
        return UnknownDatacenter(status, body)
    return ConsulStatusError(status, body)


# -- HTTP edge ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPResult:
    """What we use of one HTTP response."""

    status: int
    body: str
    index: int | None = None
    last_contact_ms: int | None = None
    # X-Consul-Results-Filtered-By-ACLs: the token may not read everything.
    filtered: bool = False
    # X-Consul-Default-Acl-Policy: deny (Consul sends no filtered flag to anonymous).
    default_deny: bool = False


class ConsulHTTP(Protocol):
    """GET requests to Consul's HTTP API (the fake in unit tests)."""

    async def get(self, path: str, params: list[tuple[str, str]], timeout_s: float) -> HTTPResult:
        """Raises ConsulTransportError when no HTTP response arrives."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsulAddress:
    scheme: str
    host: str  # IPv6 literals in brackets, as they go into a URL
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_address(url: str) -> ConsulAddress:
    """``http(s)://host[:port]`` (``config.consul``) with Consul's default ports."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConsulSetupError(f"option 'consul': {url!r}: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConsulSetupError(f"option 'consul': {url!r} is not http(s)://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ConsulSetupError(f"option 'consul': {url!r}: only scheme, host and port are allowed")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ConsulAddress(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme])


def tls_context(config: Config, address: ConsulAddress) -> ssl.SSLContext | None:
    """The TLS settings for https: CA bundle, client certificate, verification."""
    if address.scheme != "https":
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(config.consul_ca) if config.consul_ca is not None else None
        )
        if config.consul_cert is not None:
            context.load_cert_chain(config.consul_cert, config.consul_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConsulSetupError(f"options 'consul_ca'/'consul_cert'/'consul_key': {exc}") from None
    if not config.consul_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def request_headers(token: str | None) -> dict[str, str]:
    """The ACL token goes in a header, never in the URL (where logs would see it)."""
    return {"X-Consul-Token": token} if token else {}


def _header_int(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _keep_response(response: Any) -> Any:
    """py-consul callback that returns the raw Response (status, headers, body)."""
    return response


class _ConsulHTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]
    """py-consul's aiohttp adapter with the connector built here.

    py-consul's own constructor drops the client certificate when
    verification is off and uses aiohttp's deprecated ``verify_ssl`` /
    ``ssl_context`` arguments; everything else (URL building, requests) is
    the library's.
    """

    def __init__(
        self, host: str, port: int, scheme: str, *, tls: ssl.SSLContext | None, limit: int
    ) -> None:
        consul.base.HTTPClient.__init__(self, host, port, scheme)
        self.loop = None
        connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True, limit=limit)
        # trust_env=False: no proxy from the environment between us and Consul.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)


class _PyConsul(consul.aio.Consul):  # type: ignore[misc]
    """``consul.aio.Consul`` whose ``http_connect`` makes a :class:`_ConsulHTTPClient`."""

    def __init__(
        self, address: ConsulAddress, *, tls: ssl.SSLContext | None, max_connections: int
    ) -> None:
        self._tls = tls
        self._max_connections = max_connections
        super().__init__(host=address.host, port=address.port, scheme=address.scheme)
        # py-consul prefers $CONSUL_HTTP_TOKEN over an explicit token; we
        # send our own header (config: flag > file > environment) instead.
        self.token = None

    def http_connect(
        self, host: str, port: int, scheme: str, verify: bool | str = True, cert: Any = None
    ) -> _ConsulHTTPClient:
        return _ConsulHTTPClient(host, port, scheme, tls=self._tls, limit=self._max_connections)


class AioConsulHTTP:
    """Consul HTTP through one py-consul asyncio client: one aiohttp session.

    Requests use the client's HTTP adapter (``client.http.get`` with a
    callback that keeps the raw response) instead of its endpoint wrappers
    (``health.service`` ...), because those return only X-Consul-Index and
    drop X-Consul-LastContact, which the staleness rule needs, and cannot
    ask health endpoints for ``stale`` reads.
    """

    def __init__(
        self,
        address: ConsulAddress,
        *,
        token: str | None,
        tls: ssl.SSLContext | None,
        max_connections: int,
    ) -> None:
        """``max_connections`` bounds the pool (``consul_max_connections``): Consul
        refuses connections beyond ``limits.http_max_conns_per_client`` per client
        address."""
        self._address = address
        self._max_connections = max_connections
        self._headers = request_headers(token)
        self._tls = tls
        self._client: _PyConsul | None = None

    def __repr__(self) -> str:
        return f"AioConsulHTTP({self._address}, token={'set' if self._headers else 'none'})"

    def _http(self) -> Any:
        # Built on first use: aiohttp wants a running event loop.
        if self._client is None:
            self._client = _PyConsul(
                self._address, tls=self._tls, max_connections=self._max_connections
            )
        return self._client.http

    async def get(self, path: str, params: list[tuple[str, str]], timeout_s: float) -> HTTPResult:
        try:
            response = await self._http().get(
                _keep_response,
                path,
                params=params,
                headers=dict(self._headers),
                connections_timeout=timeout_s,
            )
        except (aiohttp.ClientError, TimeoutError, OSError, consul.Timeout) as exc:
            # The exception text names the address, never the headers.
            raise ConsulTransportError(f"{type(exc).__name__}: {exc}") from None
        headers = response.headers
        return HTTPResult(
            status=int(response.code),
            body=response.body if isinstance(response.body, str) else "",
            index=_header_int(headers, "X-Consul-Index"),
            last_contact_ms=_header_int(headers, "X-Consul-LastContact"),
            filtered=headers.get("X-Consul-Results-Filtered-By-ACLs") == "true",
            default_deny=headers.get("X-Consul-Default-Acl-Policy") == "deny",
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
