"""A pooled keep-alive HTTP/1.1 client for the upstream, on asyncio protocols and httptools.

Chosen by measurement: httpx was ~90x and aiohttp ~3-6x slower than this shape as a proxy client
on this machine (docs/performance.md). The client does only what a reverse proxy needs: send a
request head we built (never the client's bytes), stream bodies both ways with flow control, and
parse the response with llhttp (strict: conflicting framing is a protocol error, not a guess).

Connections are reused LIFO. A reused connection that fails before any response byte arrives is
retried once on a fresh connection, but only for requests that are safe to send twice.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

import httptools

__all__ = [
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]

HIGH_WATER = 256 * 1024  # pause reading the upstream when this much is queued for a slow client
LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The upstream exchange failed. Rendered as 502/504 problem+json with no internal detail."""

    status = 502
    reason = "upstream.error"


class UpstreamUnavailable(UpstreamError):
    reason = "upstream.unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "upstream.timeout"


class UpstreamProtocolError(UpstreamError):
    reason = "upstream.bad_response"


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.counted_out = False  # the pool has already un-counted this connection
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reset_exchange()

    # -- exchange state ---------------------------------------------------------------------
    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._framed = False  # Content-Length or chunked: EOF is not the end of the body
        self._skip_body = False

    def start(self, head_only: bool) -> None:
        """Prepare for a new request. ``head_only`` for HEAD: the response has no body even if
        it announces a length, so the connection is not reused afterwards."""
        self._reset_exchange()
        self._skip_body = head_only

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # not TCP (unix socket)
                pass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(str(exc)))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self.head_done and not self.complete and not self._framed and not self._skip_body:
            self.complete = True  # body delimited by connection close (RFC 9112 6.3, rule 8)
            self.keep_alive = False
        elif not self.complete:
            self.error = self.error or UpstreamUnavailable("connection lost")
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim response (we never send Expect, but be tolerant)
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        for name, value in self.headers:
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                self._framed = True
        self.head_done = True
        if self._skip_body:
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._skip_body:
            return
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:  # end of an interim 1xx response
            return
        self.complete = True
        self._wake()

    # -- awaiting --------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    async def _wait(self, timeout: float) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise UpstreamUnavailable("connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        if self.closed and not self.head_done:
            raise self.error or UpstreamUnavailable("connection lost")

    async def read_head(self, timeout: float) -> None:
        """Wait for the status line and headers (``self.status``, ``self.headers``)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            try:
                await self._wait(timeout)
            except TimeoutError:
                self._fail(UpstreamTimeout("no response headers in time"))
                raise self.error from None  # type: ignore[misc]

    async def read_body(self, timeout: float) -> tuple[bytes, bool]:
        """The next body bytes and whether more follow. Waits at most ``timeout`` for data."""
        while not self._chunks and not self.complete:
            if self.error is not None:
                raise self.error
            try:
                await self._wait(timeout)
            except TimeoutError:
                self._fail(UpstreamTimeout("response body stalled"))
                raise self.error from None  # type: ignore[misc]
        if self._chunks:
            data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
            self._queued = 0
            if self._reading_paused and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
        else:
            data = b""
        if self.error is not None and not self.complete:
            raise self.error
        return data, not self.complete

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamPool:
    """Keep-alive connections to one upstream host, bounded in number."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 1.0,
        max_connections: int = 512,
        max_idle: int = 128,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def acquire(self) -> UpstreamConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        while self._open >= self.max_connections:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    conn.reused = True
                    return conn
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        self._open += 1
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            self._open -= 1
            self._wake_one()
            raise UpstreamTimeout("connect timeout") from exc
        except OSError as exc:
            self._open -= 1
            self._wake_one()
            raise UpstreamUnavailable("connect failed") from exc
        return protocol

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange; it is kept only if it can carry another."""
        if conn.reusable and not self.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
            self._wake_one()
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        """Called when a connection closes, whoever closed it."""
        if conn.counted_out:
            return
        conn.counted_out = True
        self._open -= 1
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def stats(self) -> dict[str, Any]:
        return {"open": self._open, "idle": len(self._idle), "waiting": len(self._waiters)}

    async def close(self) -> None:
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
