"""Counters and gauges, exposed in the Prometheus text format."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

PREFIX = "dns_gateway_"


class Metrics:
    """A bag of counters (hot path: ``counters[name] += 1``) and gauges."""

    def __init__(self) -> None:
        self.counters: defaultdict[str, int] = defaultdict(int)
        self._gauges: dict[str, Callable[[], float]] = {}
        # Anyone who can reach the endpoint can scrape it as often as they like.
        self._log = RateLimitedLog(log, counts=self.counters)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def snapshot(self) -> dict[str, float]:
        values: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        for name, read in self._gauges.items():
            try:
                values[name] = float(read())
            except Exception as exc:  # a broken gauge must not break the endpoint
                self._log.error("gauge", "gauge %s failed", name, exc_info=exc)
        return values

    def render(self) -> str:
        lines = []
        for name, value in sorted(self.snapshot().items()):
            lines.append(f"{PREFIX}{name} {value:g}")
        return "\n".join(lines) + "\n"


async def serve_http(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: any GET returns the metrics text."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
            body = metrics.render().encode()
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
