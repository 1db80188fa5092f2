"""The data plane: a pure ASGI app (no framework routing on this path).

For each request: hygiene and refusals that need no policy (bad path, framing, oversize
headers), route match on the canonical path, the rule's guard pipeline, then forward the same
canonical path or render the decision. One log line and metrics per decision."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.core.asgi import BodyTooLarge, ClientGone, read_body
from gateway.core.context import RequestContext
from gateway.core.decisions import Allow
from gateway.core.ids import new_decision_id
from gateway.core.paths import PathRefusal
from gateway.proxy.decide import DecisionApi, Refused
from gateway.proxy.forward import BodyPlan, ClientDisconnected, build_head, forward
from gateway.proxy.headers import Inbound, read_inbound, strip_credentials
from gateway.proxy.responses import decision_response, send_problem
from gateway.proxy.upstream import UpstreamError
from gateway.proxy.websocket import proxy_websocket

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["ProxyApp"]

log = logging.getLogger("tsgate.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_BODY_METHODS = frozenset({"GET", "HEAD"})
_PROTOS = {b"http": b"http", b"https": b"https"}


class _Refusal(Exception):
    """Internal control flow only: a request refused before routing (never leaves this module)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail


class ProxyApp:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.decide = DecisionApi(gateway, self._intake_value)  # {prefix}decide/...: see decide.py

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self.handle_http(scope, receive, send)
            except Exception:  # a bug: log it with the traceback, answer without it
                log.exception("unhandled error in the proxy")
                self.gateway.metrics.refused.labels("internal.error").inc()
                # If the response already started, uvicorn refuses a second start: nothing to add.
                with contextlib.suppress(Exception):
                    await send_problem(send, 500, "internal.error", new_decision_id(),
                                       "tsgate hit an unexpected error; it has been logged.")
        elif kind == "websocket":
            try:
                await self.handle_websocket(scope, receive, send)
            except Exception:
                log.exception("unhandled error in the WebSocket proxy")
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1011})
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- request intake -------------------------------------------------------------------------
    def _intake(self, scope: Scope, decision_id: str) -> tuple[RequestContext, Inbound, bytes]:
        """Build the context or raise _Refusal. Returns (ctx, inbound headers, forwarded path)."""
        gw = self.gateway
        compiled = gw.compiled
        inbound = read_inbound(scope["headers"])
        client = scope.get("client")
        peer = client[0] if client else "0.0.0.0"
        client_ip = gw.trusted.client_ip(peer, inbound.forwarded_for) if inbound.forwarded_for else peer
        method = scope.get("method", "GET")  # WebSocket scopes have no method: the handshake is a GET
        request_cfg = compiled.policy.request
        if inbound.size > request_cfg.max_header_bytes:
            raise _Refusal(431, "request.headers_too_large", "The request headers are too large.")
        if method not in KNOWN_METHODS:
            raise _Refusal(405, "request.method_not_allowed", f"Method {method} is not accepted.")
        if inbound.hosts > 1:
            raise _Refusal(400, "request.multiple_hosts", "More than one Host header.")
        if inbound.bad_content_length:
            raise _Refusal(400, "request.bad_content_length", "Content-Length is missing digits or repeated.")
        if inbound.chunked and inbound.content_length is not None:
            raise _Refusal(400, "request.ambiguous_framing", "Content-Length and Transfer-Encoding together.")
        if method in NO_BODY_METHODS and (inbound.chunked or (inbound.content_length or 0) > 0):
            raise _Refusal(400, "request.body_not_allowed", f"A {method} request may not carry a body.")
        if gw.allowed_hosts is not None and not gw.host_allowed(inbound.host):
            raise _Refusal(400, "request.host_not_allowed", "This host is not served here.")
        canonical = gw.canonicalize(scope.get("raw_path") or scope["path"].encode("utf-8"))
        if isinstance(canonical, PathRefusal):
            raise _Refusal(canonical.status, canonical.reason, canonical.detail)
        ctx = RequestContext(
            decision_id=decision_id,
            method=method,
            path=canonical.path,
            query=scope.get("query_string", b""),
            headers=inbound.kept,
            client_ip=client_ip,
            scheme=scope.get("scheme", "http"),
            received_at=gw.clock.now(),
        )
        return ctx, inbound, canonical.forwarded

    def _intake_value(self, scope: Scope, decision_id: str) -> tuple[RequestContext, Inbound, bytes] | Refused:
        """The intake for the decision API, which rebuilds the original request as a scope."""
        try:
            return self._intake(scope, decision_id)
        except _Refusal as refusal:
            return Refused(refusal.status, refusal.reason, refusal.detail)

    def _forward_extra(self, ctx: RequestContext, inbound: Inbound, peer_trusted: bool) -> list[tuple[bytes, bytes]]:
        proto = _PROTOS.get(inbound.forwarded_proto.strip().lower(), b"") if (
            peer_trusted and inbound.forwarded_proto) else b""
        fwd_host = inbound.forwarded_host if peer_trusted and inbound.forwarded_host else inbound.host
        extra = [
            (b"x-forwarded-for", ctx.client_ip.encode("ascii")),
            (b"x-forwarded-proto", proto or ctx.scheme.encode("ascii")),
            (b"x-tsgate-decision", ctx.decision_id.encode("ascii")),
        ]
        if fwd_host:
            extra.append((b"x-forwarded-host", fwd_host))
        return extra

    # -- HTTP -------------------------------------------------------------------------------------
    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.decide.claims(scope):
            await self.decide.handle(scope, receive, send)
            return
        gw = self.gateway
        started = time.perf_counter()
        decision_id = new_decision_id()
        try:
            ctx, inbound, target = self._intake(scope, decision_id)
        except _Refusal as refusal:
            gw.metrics.refused.labels(refusal.reason).inc()
            await send_problem(send, refusal.status, refusal.reason, decision_id, refusal.detail)
            gw.record_refusal(scope, decision_id, refusal.status, refusal.reason, started)
            return
        compiled = gw.compiled
        prefix = compiled.policy.prefix
        if ctx.path.startswith(prefix) or ctx.path == prefix[:-1] or ctx.path in gw.internal:
            await self._internal(ctx, receive, send, started)
            return

        rule, params = compiled.route(ctx.method, ctx.path)
        ctx.rule_id = rule.id
        ctx.path_params = params
        pipeline = rule.pipeline
        has_body = inbound.chunked or (inbound.content_length or 0) > 0
        # Chunked bodies are buffered (bounded) before anything is forwarded: their framing is
        # only known to be sound at the last chunk, and a half-parsed message must never leave.
        if has_body and (pipeline.needs_body or inbound.chunked):
            limit = compiled.policy.request.max_body_bytes
            try:
                body = await self._read_body(receive, inbound, limit)
            except ClientDisconnected:
                gw.record(ctx, gw.allow_outcome, 499, started, reason="client.disconnected")
                return
            if body is None:
                await send_problem(send, 413, "request.body_too_large", decision_id,
                                   f"The body exceeds {limit} bytes.")
                gw.record(ctx, gw.allow_outcome, 413, started, reason="request.body_too_large")
                return
            ctx.body = body
        outcome = await pipeline.run(ctx) if pipeline.guards else gw.allow_outcome
        if outcome.failures:
            gw.count_failures(outcome)
        decision = outcome.decision
        if not isinstance(decision, Allow):
            status = await decision_response(send, decision, decision_id, prefix, ctx, gw.captcha, gw.challenge_page)
            gw.record(ctx, outcome, status, started)
            return

        if inbound.credentials:
            strip_credentials(ctx.headers)
        if gw.authn is not None:
            ctx.upstream_headers.extend(gw.authn.identity_headers(ctx))
        if ctx.body is not None:
            plan = BodyPlan(buffered=ctx.body)
        elif has_body:
            plan = BodyPlan(stream=True, content_length=inbound.content_length)
        else:
            plan = gw.no_body
        peer_trusted = bool(inbound.forwarded_proto or inbound.forwarded_host) and gw.peer_trusted(scope)
        head = build_head(ctx, target + (b"?" + ctx.query if ctx.query else b""),
                          gw.upstream_host(inbound), self._forward_extra(ctx, inbound, peer_trusted), plan)
        try:
            status = await forward(ctx, gw.pool, head, plan, receive, send, gw.read_timeout)
        except ClientDisconnected:
            gw.record(ctx, outcome, 499, started, reason="client.disconnected")
            return
        except UpstreamError as exc:
            gw.metrics.upstream_errors.labels(exc.reason).inc()
            detail = "The service did not answer in time." if exc.status == 504 else "The service is unavailable."
            await send_problem(send, exc.status, exc.reason, decision_id, detail)
            gw.record(ctx, outcome, exc.status, started, reason=exc.reason)
            return
        await _after_response(ctx, status)
        gw.record(ctx, outcome, status, started)

    async def _read_body(self, receive: Receive, inbound: Inbound, limit: int) -> bytes | None:
        """The whole body, or None when it is larger than ``limit`` (checked before reading)."""
        try:
            return await read_body(receive, limit, inbound.content_length)
        except BodyTooLarge:
            return None
        except ClientGone:
            raise ClientDisconnected() from None

    async def _internal(self, ctx: RequestContext, receive: Receive, send: Send, started: float) -> None:
        gw = self.gateway
        rule = gw.compiled.internal_route(ctx.method, ctx.path)
        ctx.rule_id = rule.id
        pipeline = rule.pipeline
        if pipeline.needs_body:  # e.g. a policy-wide limit keyed by the login name in the body
            try:
                ctx.body = await read_body(receive, gw.compiled.policy.request.max_body_bytes)
            except BodyTooLarge:
                await send_problem(send, 413, "request.body_too_large", ctx.decision_id, "The body is too large.")
                gw.record(ctx, gw.allow_outcome, 413, started, reason="request.body_too_large")
                return
            except ClientGone:
                gw.record(ctx, gw.allow_outcome, 499, started, reason="client.disconnected")
                return
            receive = _replay(ctx.body)
        outcome = await pipeline.run(ctx) if pipeline.guards else gw.allow_outcome
        if not isinstance(outcome.decision, Allow):
            status = await decision_response(send, outcome.decision, ctx.decision_id, gw.compiled.policy.prefix,
                                             ctx, gw.captcha, gw.challenge_page)
            gw.record(ctx, outcome, status, started)
            return
        handler = gw.internal.get(ctx.path)
        if handler is None:
            status = 404
            await send_problem(send, 404, "internal.not_found", ctx.decision_id, "No such tsgate endpoint.")
        else:
            status = await handler(ctx, receive, send)
        await _after_response(ctx, status)
        gw.record(ctx, outcome, status, started)

    # -- WebSocket --------------------------------------------------------------------------------
    async def handle_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        started = time.perf_counter()
        decision_id = new_decision_id()
        try:
            ctx, inbound, target = self._intake(scope, decision_id)
        except _Refusal as refusal:
            await _ws_refuse(scope, send, refusal.status, refusal.reason, decision_id, refusal.detail)
            gw.record_refusal(scope, decision_id, refusal.status, refusal.reason, started)
            return
        rule, params = gw.compiled.route("GET", ctx.path)
        ctx.rule_id, ctx.path_params = rule.id, params
        outcome = await rule.pipeline.run(ctx) if rule.pipeline.guards else gw.allow_outcome
        decision = outcome.decision
        if not isinstance(decision, Allow):
            status = getattr(decision, "status", 403)
            reason = getattr(decision, "reason", "denied")
            await _ws_refuse(scope, send, status, reason, decision_id, getattr(decision, "detail", ""))
            gw.record(ctx, outcome, status, started)
            return
        if inbound.credentials:
            strip_credentials(ctx.headers)
        if gw.authn is not None:
            ctx.upstream_headers.extend(gw.authn.identity_headers(ctx))
        peer_trusted = gw.peer_trusted(scope)
        extra = self._forward_extra(ctx, inbound, peer_trusted)
        status = await proxy_websocket(ctx, scope, receive, send, gw.ws_url(target, ctx.query), extra,
                                       gw.policy.upstream.connect_timeout)
        gw.record(ctx, outcome, status, started)


async def _after_response(ctx: RequestContext, status: int) -> None:
    """Hooks guards left for when the status is known; one failing hook never hides the others."""
    for hook in ctx.after_response:
        try:
            await hook(status)
        except Exception:
            log.exception("after-response hook failed")


def _replay(body: bytes) -> Receive:
    """A receive() that hands a buffered body to a handler that reads it again."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _ws_refuse(scope: Scope, send: Send, status: int, reason: str, decision_id: str, detail: str) -> None:
    """Refuse a WebSocket handshake with a problem+json body where the server allows it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send_problem(_ws_send_adapter(send), status, reason, decision_id, detail)
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


def _ws_send_adapter(send: Send) -> Send:
    async def adapted(message: dict[str, Any]) -> None:
        await send({**message, "type": "websocket." + message["type"]})

    return adapted
