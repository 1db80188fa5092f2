"""Decision API mode: tsgate as the authorization service of a proxy the operator already runs.

``{prefix}decide/nginx`` (``auth_request``), ``{prefix}decide/traefik`` (``forwardAuth``) and
``{prefix}decide/envoy/<original path>`` (``ext_authz``, HTTP service) answer "may this request
pass?" with the same code as the proxy: the original request is rebuilt as an ASGI scope and goes
through the proxy's own intake (header hygiene, canonical path, client IP through trusted
proxies, allowed hosts), then route → the rule's pipeline → after-response hooks (status 200
assumed: the upstream's real status is never seen here).

Allow is ``200`` with the identity headers to copy upstream (``X-Tsgate-User``, ``-Roles``,
``-Assertion``, ``-Decision``); Deny/Challenge/Hold is the decision's problem+json response.
Where the asking proxy cannot pass a status through, it is mapped and the real one travels in
``X-Tsgate-Status``: nginx passes only 401/403 (everything else becomes 403) and nginx and
Traefik both treat any 2xx as "allow" (a Hold's 202 becomes 403).

Security: only trusted proxies (policy ``trusted_proxies``) may ask; the answer names a user, so
anyone else gets 403. The original method, URI and host come from headers the asking proxy sets,
which is why the peer must be trusted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.core.asgi import BodyTooLarge, ClientGone, Receive, Send, read_body, send_problem
from gateway.core.context import RequestContext
from gateway.core.decisions import Allow, Deny
from gateway.core.ids import new_decision_id
from gateway.core.pipeline import Outcome
from gateway.proxy.headers import Inbound
from gateway.proxy.responses import decision_response

if TYPE_CHECKING:
    from gateway.app import Gateway
    from policies.compiled import CompiledPolicy

__all__ = ["DecisionApi", "Flavor", "Intake", "Refused"]

log = logging.getLogger("tsgate.decide")

Scope = dict[str, Any]
Flavor = Literal["nginx", "traefik", "envoy"]
FLAVORS: tuple[Flavor, ...] = ("nginx", "traefik", "envoy")
NO_BODY_METHODS = frozenset({"GET", "HEAD"})

# Headers that carry the original request's line and host: they describe, they are not part of it.
_NGINX = (b"x-original-method", b"x-original-uri", b"x-original-host")
_TRAEFIK = (b"x-forwarded-method", b"x-forwarded-uri", b"x-forwarded-host")
_ENVELOPE = frozenset({*_NGINX, *_TRAEFIK, b"host", b"x-forwarded-proto"})
_SCHEMES = {b"http": "http", b"https": "https"}
BODY_UNAVAILABLE = Deny(403, "decide.body_unavailable", "This route's guards read the request body; send it "
                        "with the subrequest or route it through the tsgate proxy.")


@dataclass(frozen=True, slots=True)
class Refused:
    """The proxy's intake refused the (original) request before routing."""

    status: int
    reason: str
    detail: str


Intake = Callable[[Scope, str], "tuple[RequestContext, Inbound, bytes] | Refused"]


class _Missing(Exception):
    """Internal control flow: the asking proxy did not send what its flavor requires."""


class DecisionApi:
    """The decision endpoints on the proxy listener. ``claims`` is the cheap test the proxy runs
    on every request; ``handle`` answers one authorization subrequest."""

    def __init__(self, gateway: Gateway, intake: Intake) -> None:
        self.gateway = gateway
        self.intake = intake
        self._compiled: CompiledPolicy | None = None
        self._mark = b""

    @property
    def mark(self) -> bytes:
        """``{prefix}decide/`` for the policy in force (the prefix can change on reload)."""
        compiled = self.gateway.compiled
        if compiled is not self._compiled:
            self._compiled = compiled
            self._mark = (compiled.policy.prefix + "decide/").encode("ascii")
        return self._mark

    def claims(self, scope: Scope) -> bool:
        raw: bytes | None = scope.get("raw_path")
        return raw is not None and raw.startswith(self.mark)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        started = time.perf_counter()
        decision_id = new_decision_id()
        if not gw.peer_trusted(scope):  # first: an untrusted peer learns nothing else
            await send_problem(send, 403, "decide.untrusted_peer", decision_id,
                               "Only a trusted proxy (policy trusted_proxies) may ask for decisions.")
            gw.record_refusal(scope, decision_id, 403, "decide.untrusted_peer", started)
            return
        tail = scope["raw_path"][len(self.mark):]
        name = tail.split(b"/", 1)[0].decode("latin-1")
        flavor: Flavor | None = next((f for f in FLAVORS if f == name), None)
        if flavor is None or (flavor != "envoy" and tail != name.encode()):
            await send_problem(send, 404, "decide.not_found", decision_id,
                               "Decision endpoints: decide/nginx, decide/traefik, decide/envoy/<path>.")
            gw.record_refusal(scope, decision_id, 404, "decide.not_found", started)
            return
        out = _Answer(send, flavor)
        try:
            original = _original_scope(scope, flavor, tail)
        except _Missing as exc:
            await send_problem(out, 400, "decide.bad_subrequest", decision_id, str(exc))
            gw.record_refusal(scope, decision_id, 400, "decide.bad_subrequest", started)
            return
        intake = self.intake(original, decision_id)
        if isinstance(intake, Refused):
            gw.metrics.refused.labels(intake.reason).inc()
            await send_problem(out, intake.status, intake.reason, decision_id, intake.detail)
            gw.record_refusal(original, decision_id, intake.status, intake.reason, started)
            return
        ctx, inbound, _target = intake
        await self._decide(ctx, inbound, receive, out, started)

    async def _decide(self, ctx: RequestContext, inbound: Inbound, receive: Receive, out: _Answer,
                      started: float) -> None:
        gw = self.gateway
        compiled = gw.compiled
        prefix = compiled.policy.prefix
        if ctx.path.startswith(prefix) or ctx.path == prefix[:-1]:
            rule = compiled.internal_route(ctx.method, ctx.path)
        else:
            rule, ctx.path_params = compiled.route(ctx.method, ctx.path)
        ctx.rule_id = rule.id
        pipeline = rule.pipeline
        if pipeline.needs_body:
            if inbound.chunked or (inbound.content_length or 0) > 0:  # Envoy with_request_body, Traefik forwardBody
                limit = compiled.policy.request.max_body_bytes
                try:
                    ctx.body = await read_body(receive, limit, inbound.content_length)
                except BodyTooLarge:
                    await send_problem(out, 413, "request.body_too_large", ctx.decision_id,
                                       f"The body exceeds {limit} bytes.")
                    gw.record(ctx, gw.allow_outcome, 413, started, reason="request.body_too_large")
                    return
                except ClientGone:
                    gw.record(ctx, gw.allow_outcome, 499, started, reason="client.disconnected")
                    return
            elif ctx.method not in NO_BODY_METHODS:
                # A guard of this rule reads the body (moderation, a limit keyed by a body field) and
                # the asking proxy did not send it: deciding without it would skip that guard.
                refusal = Outcome(BODY_UNAVAILABLE, guard="decide")
                await send_problem(out, 403, BODY_UNAVAILABLE.reason, ctx.decision_id, BODY_UNAVAILABLE.detail)
                gw.record(ctx, refusal, 403, started)
                return
        outcome = await pipeline.run(ctx) if pipeline.guards else gw.allow_outcome
        if outcome.failures:
            gw.count_failures(outcome)
        decision = outcome.decision
        if not isinstance(decision, Allow):
            status = await decision_response(out, decision, ctx.decision_id, prefix, ctx, gw.captcha,
                                             gw.challenge_page)
            gw.record(ctx, outcome, status, started)
            return
        if gw.authn is not None:
            ctx.upstream_headers.extend(gw.authn.identity_headers(ctx))
        headers = [
            (b"content-length", b"0"),
            (b"cache-control", b"no-store"),
            (b"x-tsgate-decision", ctx.decision_id.encode("ascii")),
            *ctx.upstream_headers,
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in ctx.response_headers),
        ]
        await out({"type": "http.response.start", "status": 200, "headers": headers})
        await out({"type": "http.response.body", "body": b""})
        await _after_response(ctx, 200)
        gw.record(ctx, outcome, 200, started)


class _Answer:
    """``send`` for one flavor: refusals whose status the asking proxy would misread are mapped
    (nginx: only 401/403 pass; nginx and Traefik: any 2xx means allow), the real status in
    ``X-Tsgate-Status`` for ``auth_request_set``."""

    __slots__ = ("flavor", "send")

    def __init__(self, send: Send, flavor: Flavor) -> None:
        self.send = send
        self.flavor = flavor

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            status: int = message["status"]
            answered = _answered_status(self.flavor, status)
            headers = [*message.get("headers", []), (b"x-tsgate-status", str(status).encode())]
            message = {**message, "status": answered, "headers": headers}
        await self.send(message)


def _answered_status(flavor: Flavor, status: int) -> int:
    if flavor == "nginx":
        return status if status in (401, 403) else 403
    if flavor == "traefik":
        return 403 if status < 300 else status
    return status  # Envoy: anything but 200 denies and reaches the client as is


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _original_scope(scope: Scope, flavor: Flavor, tail: bytes) -> Scope:
    """The original request as the proxy's intake expects it, from the subrequest."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    if flavor == "envoy":
        method = scope["method"]
        target = tail[len(b"envoy"):] or b"/"
        query = scope.get("query_string", b"")
        host = _header(headers, b"host")
    else:
        method_name, uri_name, host_name = _NGINX if flavor == "nginx" else _TRAEFIK
        raw_method, uri = _header(headers, method_name), _header(headers, uri_name)
        if not raw_method or not uri:
            raise _Missing(f"The {flavor} subrequest must carry {method_name.decode()} and {uri_name.decode()}.")
        method = raw_method.decode("latin-1").strip().upper()
        target, _, query = uri.partition(b"?")
        host = _header(headers, host_name) or _header(headers, b"host")
    if not target.startswith(b"/"):
        raise _Missing("The original URI must be in origin form (start with '/').")
    proto = _header(headers, b"x-forwarded-proto")
    scheme = _SCHEMES.get(proto.strip().lower(), scope.get("scheme", "http")) if proto else scope.get("scheme", "http")
    kept = [(n, v) for n, v in headers if n not in _ENVELOPE]
    if host:
        kept.append((b"host", host))
    return {
        "type": "http",
        "method": method,
        "path": target.decode("latin-1"),
        "raw_path": target,
        "query_string": query,
        "headers": kept,
        "client": scope.get("client"),
        "scheme": scheme,
    }


async def _after_response(ctx: RequestContext, status: int) -> None:
    """The proxy's after-response hooks, run with the status this answer assumes."""
    for hook in ctx.after_response:
        try:
            await hook(status)
        except Exception:
            log.exception("after-response hook failed")
