"""Small ASGI helpers shared by the proxy and by feature endpoints on the proxy listener
(``/_tsgate/...``): JSON and problem responses, and a bounded body reader."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.core.problem import problem_body

__all__ = ["BodyTooLarge", "ClientGone", "Receive", "Send", "read_body", "send_json", "send_problem"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = tuple[tuple[str, str], ...] | list[tuple[str, str]]

PROBLEM_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


class BodyTooLarge(Exception):
    """Internal control flow for read_body: the body is over the limit."""


class ClientGone(Exception):
    """Internal control flow for read_body: the client disconnected mid-body."""


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_problem(send: Send, status: int, reason: str, decision_id: str, detail: str = "",
                       headers: Headers = (), **extra: Any) -> None:
    body = problem_body(status, reason, decision_id, detail, **extra)
    out = [*PROBLEM_HEADERS, (b"content-length", str(len(body)).encode()),
           (b"tsgate-decision", decision_id.encode()), *_encode(headers)]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, decision_id: str, headers: Headers = ()) -> None:
    body = json.dumps(data, separators=(",", ":")).encode("utf-8") if status != 204 else b""
    out = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
           (b"tsgate-decision", decision_id.encode()), *_encode(headers)]
    if status != 204:
        out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int, content_length: int | None = None) -> bytes:
    """The whole request body; raises BodyTooLarge past ``limit`` (checked against the declared
    length before reading) and ClientGone when the client disconnects."""
    if content_length is not None and content_length > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
