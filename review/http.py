"""A small bounded HTTP/1.1 client for the review effects (forwarding an approved held request,
delivering a webhook): one request per connection, a total timeout, a capped response body, and
llhttp (httptools) parsing the response. Not the proxy path: that uses ``gateway.proxy.upstream``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpFailure", "HttpResult", "send"]

MAX_BODY = 1 << 20


class HttpFailure(Exception):
    """The exchange failed (connect, timeout, malformed or oversized response)."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    body: bytes


class _Collector:
    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False

    def on_body(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > MAX_BODY:
            raise HttpFailure("response body too large")

    def on_message_complete(self) -> None:
        self.done = True


async def send(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes = b"", *,
               timeout: float = 5.0) -> HttpResult:
    """Send one request; the status and body of the answer, or ``HttpFailure``."""
    try:
        return await asyncio.wait_for(_send(method, url, headers, body), timeout)
    except TimeoutError as exc:
        raise HttpFailure(f"no answer within {timeout:g}s") from exc
    except (OSError, httptools.HttpParserError, ValueError) as exc:
        raise HttpFailure(f"{type(exc).__name__}: {exc}") from exc


async def _send(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> HttpResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpFailure(f"not an http(s) URL: {url[:80]}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    context = ssl.create_default_context() if parts.scheme == "https" else None
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        for name, value in headers:
            if "\r" in name + value or "\n" in name + value:
                raise HttpFailure("header with a line break")
            lines.append(f"{name}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        collector = _Collector()
        parser = httptools.HttpResponseParser(collector)
        while not collector.done:
            chunk = await reader.read(65536)
            if not chunk:
                break
            parser.feed_data(chunk)
        if not collector.done:
            raise HttpFailure("connection closed before the response was complete")
        return HttpResult(parser.get_status_code(), bytes(collector.body))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
