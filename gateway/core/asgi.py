"""Small ASGI helpers shared by the proxy and by feature endpoints on the proxy listener
(``/_tsgate/...``): JSON and problem responses, and a bounded body reader."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.core.context import RequestContext
from gateway.core.problem import problem_body

__all__ = ["BodyTooLarge", "ClientGone", "EndpointProblem", "Receive", "Send", "endpoint", "parse_json_object",
           "read_body", "read_endpoint_body", "read_json_object", "send_json", "send_problem"]

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


# -- tsgate's own endpoints (auth, captcha, appeals) ------------------------------------------------

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]


class EndpointProblem(Exception):
    """Control flow inside an endpoint handler: answer with this problem and stop."""

    def __init__(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = (),
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers, self.extra = status, reason, detail, headers, extra


def endpoint(handler: Handler, method: str) -> Handler:
    """``handler`` for one method (HEAD too for GET: 405 with Allow otherwise); an
    ``EndpointProblem`` it raises becomes its problem+json answer."""
    async def run(ctx: RequestContext, receive: Receive, send: Send) -> int:
        if ctx.method != method and not (method == "GET" and ctx.method == "HEAD"):
            await send_problem(send, 405, "request.method_not_allowed", ctx.decision_id, f"Use {method}.",
                               (("Allow", method),))
            return 405
        try:
            return await handler(ctx, receive, send)
        except EndpointProblem as problem:
            await send_problem(send, problem.status, problem.reason, ctx.decision_id, problem.detail,
                               problem.headers, **problem.extra)
            return problem.status

    return run


async def read_endpoint_body(receive: Receive, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes; 413 / 400 problems otherwise."""
    try:
        return await read_body(receive, limit)
    except BodyTooLarge:
        raise EndpointProblem(413, "request.body_too_large", f"The body exceeds {limit} bytes.") from None
    except ClientGone:
        raise EndpointProblem(400, "request.incomplete", "The request body did not arrive.") from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object (an empty body is ``{}``); 400 ``request.bad_json`` otherwise."""
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise EndpointProblem(400, "request.bad_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise EndpointProblem(400, "request.bad_json", "The body must be a JSON object.")
    return data


async def read_json_object(ctx: RequestContext, receive: Receive, limit: int) -> dict[str, Any]:
    """A JSON-object body sent with ``Content-Type: application/json`` (415 otherwise)."""
    content_type = (ctx.header(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise EndpointProblem(415, "request.unsupported_media_type", "Send Content-Type: application/json.")
    return parse_json_object(await read_endpoint_body(receive, limit))
