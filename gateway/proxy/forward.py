"""Forwarding an allowed request: the request head tsgate builds, the body (buffered or
streamed), and the response streamed back. Nothing of the client's framing is copied: the head
is written from the canonical path and the filtered headers, and the body is re-framed."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.core.context import RequestContext
from gateway.proxy.headers import filter_response_headers
from gateway.proxy.upstream import UpstreamConnection, UpstreamError, UpstreamPool

__all__ = ["BodyPlan", "ClientDisconnected", "forward"]

Receive = Any
Send = Any

# Safe to send twice when a pooled connection turns out to be dead before any response byte.
RETRYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ClientDisconnected(Exception):
    """The client went away (or its body framing broke) before the request was complete.
    Logged with status 499 (nginx's convention); nothing can be sent back."""


class BodyPlan:
    """How the request body goes upstream: none, buffered bytes, or streamed from ``receive``."""

    __slots__ = ("buffered", "chunked", "content_length", "stream")

    def __init__(
        self, *, buffered: bytes | None = None, stream: bool = False, content_length: int | None = None
    ) -> None:
        self.buffered = buffered
        self.stream = stream
        self.content_length = content_length
        self.chunked = stream and content_length is None

    def framing(self) -> bytes:
        if self.buffered is not None:
            return b"content-length: %d\r\n" % len(self.buffered)
        if self.chunked:
            return b"transfer-encoding: chunked\r\n"
        if self.stream:
            return b"content-length: %d\r\n" % (self.content_length or 0)
        return b""


def build_head(ctx: RequestContext, target: bytes, host: bytes, extra: list[tuple[bytes, bytes]],
               plan: BodyPlan) -> bytes:
    parts = [ctx.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in ctx.headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    for name, value in ctx.upstream_headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(plan.framing())
    parts.append(b"\r\n")
    return b"".join(parts)


async def _stream_request_body(conn: UpstreamConnection, receive: Receive, chunked: bool) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected()
        body = message.get("body", b"")
        if body:
            conn.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
            await conn.drain()
        if not message.get("more_body", False):
            break
    if chunked:
        conn.write(b"0\r\n\r\n")


async def _exchange(
    pool: UpstreamPool, head: bytes, plan: BodyPlan, receive: Receive, method: str, read_timeout: float
) -> UpstreamConnection:
    """Send the request and wait for the response head; retry once on a dead pooled connection."""
    attempt = 0
    while True:
        attempt += 1
        conn = await pool.acquire()
        conn.start(head_only=method == "HEAD")
        try:
            if plan.buffered is not None:
                conn.write(head + plan.buffered)
            else:
                conn.write(head)
                if plan.stream:
                    await _stream_request_body(conn, receive, plan.chunked)
            await conn.read_head(read_timeout)
            return conn
        except ClientDisconnected:
            conn.close()
            raise
        except UpstreamError:
            conn.close()
            replayable = not plan.stream and method in RETRYABLE_METHODS
            if attempt == 1 and conn.reused and not conn.got_bytes and replayable:
                continue  # the upstream closed an idle keep-alive connection under us
            raise


async def _watch_disconnect(receive: Receive, conn: UpstreamConnection) -> None:
    """For long responses (SSE, downloads): stop reading the upstream when the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            conn.close()
            return


async def forward(
    ctx: RequestContext,
    pool: UpstreamPool,
    head: bytes,
    plan: BodyPlan,
    receive: Receive,
    send: Send,
    read_timeout: float,
) -> int:
    """Forward and stream the response back. Returns the upstream status.

    Raises UpstreamError only before the response has started (the caller answers 502/504).
    After it started, a failure ends the response early and the client sees a truncated body."""
    conn = await _exchange(pool, head, plan, receive, ctx.method, read_timeout)
    headers = filter_response_headers(conn.headers)
    headers.append((b"tsgate-decision", ctx.decision_id.encode("ascii")))
    for name, value in ctx.response_headers:  # e.g. RateLimit / RateLimit-Policy from guards
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    status = conn.status
    if conn.complete:  # the whole response is already here: one send for head, one for body
        body, _ = await conn.read_body(read_timeout)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        pool.release(conn)
        return status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    watcher = asyncio.ensure_future(_watch_disconnect(receive, conn))
    try:
        more = True
        while more:
            try:
                body, more = await conn.read_body(read_timeout)
            except UpstreamError:
                conn.close()
                return status  # truncated: uvicorn closes the client connection
            await send({"type": "http.response.body", "body": body, "more_body": more})
    finally:
        watcher.cancel()
    pool.release(conn)
    return status
