"""WebSocket proxying: guards run on the handshake (in ProxyApp); once allowed, messages are
pumped both ways between the client (ASGI) and a `websockets` client connection upstream.

The upstream handshake carries the same hygiene as HTTP: the filtered client headers plus
tsgate's X-Forwarded-* and identity headers. Close codes are relayed in both directions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.core.context import RequestContext

__all__ = ["proxy_websocket"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Handshake headers the websockets client writes itself.
_HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                        b"sec-websocket-protocol", b"sec-websocket-accept"})
MAX_MESSAGE = 1 << 20


async def proxy_websocket(
    ctx: RequestContext,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    url: str,
    extra: list[tuple[bytes, bytes]],
    connect_timeout: float,
) -> int:
    """Returns 101 when the session was proxied, 502/403 when the upstream refused it."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return 400
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in ctx.headers if n not in _HANDSHAKE]
    headers += [(n.decode("latin-1"), v.decode("latin-1")) for n, v in (*extra, *ctx.upstream_headers)]
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=scope.get("subprotocols") or None,
            compression=None,
            open_timeout=connect_timeout,
            user_agent_header=None,
            proxy=None,
            max_size=MAX_MESSAGE,
            ping_interval=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        await send({"type": "websocket.close", "code": 1008 if status in (401, 403) else 1011})
        return status if status in (401, 403, 404) else 502
    except (OSError, TimeoutError, InvalidHandshake):
        await send({"type": "websocket.close", "code": 1011})
        return 502
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
    await _pump(receive, send, upstream)
    return 101


async def _pump(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(code=_relayable(message.get("code", 1000)))
                return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):  # the client may already be gone
            await send({"type": "websocket.close", "code": _relayable(code)})

    tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await upstream.close()


def _relayable(code: int) -> int:
    """Codes 1005/1006/1015 are reserved for reporting and may not be sent in a close frame."""
    return 1000 if code in (1005, 1006, 1015) else code
