"""The HTTP edge: token header, transport errors, address and TLS options (no sockets)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import consul.base
import pytest

from gateway.catalog.source import CatalogUnavailable
from gateway.consul.http import (
    AioConsulHTTP,
    ConsulAddress,
    ConsulSetupError,
    ConsulTransportError,
    parse_address,
    request_headers,
    tls_context,
)
from gateway.consul.source import ConsulSource
from gateway.errors import StartupError
from tests.unit.consul.fakes import FakeClock, config, settle

TOKEN = "s3cret-token-0123"

pytestmark = pytest.mark.timeout(10)


# -- token, TLS, address ------------------------------------------------------------------


class _CapturingHTTP:
    """Stands in for py-consul's aiohttp adapter: records what a request would send."""

    def __init__(self, fail: BaseException | None = None, status: int = 200) -> None:
        self.headers: list[dict[str, str]] = []
        self.fail = fail
        self.status = status

    async def get(self, callback: Any, path: str, **kwargs: Any) -> Any:
        self.headers.append(kwargs["headers"])
        if self.fail is not None:
            raise self.fail
        headers = {"X-Consul-Index": "7", "X-Consul-LastContact": "12"}
        body = {"/v1/catalog/datacenters": '["dc1"]', "/v1/catalog/services": "{}"}.get(path, "[]")
        if "index" in dict(kwargs["params"]):
            await asyncio.Event().wait()  # a blocking read: nothing changes
        return callback(consul.base.Response(self.status, headers, body))


def test_token_goes_into_the_header_and_nowhere_else(caplog: pytest.LogCaptureFixture) -> None:
    assert request_headers(TOKEN) == {"X-Consul-Token": TOKEN}
    assert request_headers(None) == {}
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        address = ConsulAddress("http", "127.0.0.1", 8500)
        http = AioConsulHTTP(address, token=TOKEN, tls=None, max_connections=150)
        fake = _CapturingHTTP()
        http._http = lambda: fake  # type: ignore[method-assign]
        result = await http.get("/v1/catalog/nodes", [("stale", "")], 1.0)
        assert (result.index, result.last_contact_ms) == (7, 12)
        assert fake.headers == [{"X-Consul-Token": TOKEN}]

        # Errors and denials are logged; the token never is.
        source = ConsulSource(config(consul_token=TOKEN), http=http, clock=FakeClock())
        await source.start()
        await settle()
        for name, failure in (("web", aiohttp.ClientConnectionError("refused")), ("api", None)):
            fake.fail, fake.status = failure, 403
            with pytest.raises(CatalogUnavailable):
                await source.fetch_service("dc1", name)
        await source.stop()
        assert TOKEN not in repr(http) + repr(source) + repr(config(consul_token=TOKEN))

    asyncio.run(main())
    assert "Consul denied /v1/health/service/api" in caplog.text
    assert "not reachable" in caplog.text
    assert TOKEN not in caplog.text


def test_transport_errors_become_consul_transport_error() -> None:
    async def main() -> None:
        http = AioConsulHTTP(
            ConsulAddress("http", "127.0.0.1", 8500), token=None, tls=None, max_connections=150
        )
        http._http = lambda: _CapturingHTTP(TimeoutError())  # type: ignore[method-assign]
        with pytest.raises(ConsulTransportError, match="TimeoutError"):
            await http.get("/v1/catalog/nodes", [], 1.0)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8500", ConsulAddress("http", "127.0.0.1", 8500)),
        ("https://consul.local", ConsulAddress("https", "consul.local", 8501)),
        ("http://[::1]:8600/", ConsulAddress("http", "[::1]", 8600)),
    ],
)
def test_parse_address(url: str, expected: ConsulAddress) -> None:
    assert parse_address(url) == expected
    assert str(expected).startswith(expected.scheme + "://")


@pytest.mark.parametrize(
    "url", ["ftp://h", "http://h:99999", "http://h/consul", "http://u:p@h", "http://"]
)
def test_bad_addresses_name_the_option(url: str) -> None:
    with pytest.raises(ConsulSetupError, match="option 'consul'"):
        parse_address(url)


def test_tls_context(tmp_path: Path) -> None:
    https = ConsulAddress("https", "127.0.0.1", 8501)
    assert tls_context(config(), ConsulAddress("http", "h", 1)) is None
    verified = tls_context(config(), https)
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    unverified = tls_context(config(consul_tls_verify=False), https)
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConsulSetupError, match="consul_ca"):
        tls_context(config(consul_ca=bad), https)


def test_setup_errors_are_startup_errors() -> None:
    # __main__ reports any StartupError as one line and exit code 2.
    assert issubclass(ConsulSetupError, StartupError)
