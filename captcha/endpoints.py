"""CAPTCHA endpoints on the proxy listener, under the reserved prefix:

    GET  {prefix}captcha/challenge?scope=S&level=N   → 200 ALTCHA v2 challenge (widget 3.x format)
    POST {prefix}captcha/verify                      → 200 clearance (JSON + HttpOnly cookie)
         form:  altcha=<base64 payload>  |  cf-turnstile-response=… | h-captcha-response=… (+ scope=S)
         JSON:  {"altcha": "<base64>"} | {"challenge": …, "solution": …}
                | {"provider": "turnstile"|"hcaptcha", "response": "…", "scope": "S"}
    GET  {prefix}captcha/solver.js | worker.js | challenge.css   the interstitial's own assets

Every refusal is problem+json with a stable reason and the decision id; nothing here raises for
hostile input. Issue and verify have per-IP budgets (SECURITY.md class 7)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from captcha.page import ChallengePage
from captcha.runtime import CLEARANCE_HEADER, CaptchaRuntime
from gateway.core.asgi import (
    EndpointProblem,
    Receive,
    Send,
    endpoint,
    parse_json_object,
    read_endpoint_body,
    send_json,
)
from gateway.core.context import RequestContext

__all__ = ["CaptchaEndpoints"]

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]
MAX_BODY = 16 * 1024
_FORM_PROVIDERS = {"cf-turnstile-response": "turnstile", "h-captcha-response": "hcaptcha"}


def _one(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found else None


class CaptchaEndpoints:
    def __init__(self, runtime: CaptchaRuntime, page: ChallengePage) -> None:
        self.runtime = runtime
        self.page = page
        self.base = runtime.own_prefix

    def routes(self) -> dict[str, Handler]:
        routes = {self.base + "challenge": endpoint(self.challenge, "GET"),
                  self.base + "verify": endpoint(self.verify, "POST")}
        for name in self.page.assets:
            routes[self.base + name] = endpoint(self._asset(name), "GET")
        return routes

    async def _budget(self, ctx: RequestContext, kind: str, per_minute: int) -> None:
        if not await self.runtime.attempt_allowed(kind, ctx.client_ip, per_minute):
            raise EndpointProblem(429, "captcha.too_many_attempts", f"Too many CAPTCHA {kind} requests; slow down.",
                           (("Retry-After", "60"),))

    # -- GET challenge --------------------------------------------------------------------------------
    async def challenge(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        settings = rt.settings
        query = parse_qs(ctx.query.decode("latin-1"), max_num_fields=8)
        scope = _one(query, "scope") or "default"
        if scope not in settings.scopes:
            raise EndpointProblem(400, "captcha.unknown_scope", "No rule or route group has this scope.",
                                  scope=scope[:64])
        raw_level = _one(query, "level")
        level = settings.scope_route(scope).level
        if raw_level is not None:
            if not raw_level.isdigit() or not 1 <= int(raw_level) <= settings.max_level:
                raise EndpointProblem(400, "captcha.bad_level", f"level must be 1..{settings.max_level}.")
            level = int(raw_level)
        await self._budget(ctx, "issue", settings.issue_per_minute)
        body = await rt.issue_challenge(scope, level, await rt.binding(ctx))
        await send_json(send, 200, body, ctx.decision_id)
        return 200

    # -- POST verify ----------------------------------------------------------------------------------
    async def _fields(self, ctx: RequestContext, receive: Receive) -> dict[str, Any]:
        content_type = (ctx.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type not in (b"application/json", b"application/x-www-form-urlencoded"):
            raise EndpointProblem(415, "request.unsupported_media_type",
                           "Send application/json or application/x-www-form-urlencoded.")
        raw = await read_endpoint_body(receive, MAX_BODY)
        if content_type == b"application/json":
            return parse_json_object(raw)
        try:
            form = parse_qs(raw.decode("utf-8"), max_num_fields=16, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise EndpointProblem(400, "request.bad_form", "The form body is not valid.") from None
        fields: dict[str, Any] = {k: v[0] for k, v in form.items()}
        for field, kind in _FORM_PROVIDERS.items():
            if field in fields:
                fields.update(provider=kind, response=fields[field])
        return fields

    async def verify(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        await self._budget(ctx, "verify", rt.settings.verify_per_minute)
        fields = await self._fields(ctx, receive)
        binding = await rt.binding(ctx)
        if "provider" in fields:
            scope, level = await self._provider(ctx, fields)
        else:
            payload = fields.get("altcha", fields if "challenge" in fields else None)
            verdict, reason = await rt.check_solution(payload, binding)
            if reason == "captcha.malformed":
                raise EndpointProblem(400, reason, "Send the widget's payload in the 'altcha' field.")
            if reason == "captcha.expired":
                raise EndpointProblem(403, reason, "The challenge expired; fetch a new one.")
            if reason != "ok":
                await rt.ladder.strike(binding, rt.settings.scope_route(verdict.scope).escalate
                                       if verdict.scope in rt.settings.scopes else rt.settings.escalate)
                detail = ("This challenge was already used." if reason == "captcha.replayed"
                          else "The solution does not match the challenge.")
                raise EndpointProblem(403, reason, detail)
            scope, level = verdict.scope, verdict.level
        route = rt.settings.scope_route(scope)
        refused = rt.ladder.past_challenge(await rt.ladder.strikes(binding), route.escalate, scope)
        if refused is not None:  # the ladder moved past challenges: a solve buys nothing now
            raise EndpointProblem(403, "captcha.denied", "Too many failed or spent challenges; try again later.",
                           (("Retry-After", str(max(1, int(route.escalate.window)))),))
        issued = rt.grant(binding, scope, level)
        c = issued.clearance
        body = {"clearance": issued.token, "scope": scope, "level": level, "expires_at": c.expires_at,
                "uses": c.uses or None, "header": CLEARANCE_HEADER, "cookie": rt.cookie_name(scope)}
        await send_json(send, 200, body, ctx.decision_id, (rt.cookie(issued),))
        return 200

    async def _provider(self, ctx: RequestContext, fields: dict[str, Any]) -> tuple[str, int]:
        rt = self.runtime
        kind, token, scope = fields.get("provider"), fields.get("response"), fields.get("scope", "default")
        if not isinstance(kind, str) or kind not in rt.providers:
            raise EndpointProblem(400, "captcha.unknown_provider", "This CAPTCHA provider is not configured.")
        if not isinstance(scope, str) or scope not in rt.settings.scopes:
            raise EndpointProblem(400, "captcha.unknown_scope", "No rule or route group has this scope.")
        if not isinstance(token, str):
            raise EndpointProblem(400, "captcha.malformed", "Send the provider's token in 'response'.")
        result = await rt.check_provider(kind, token, ctx.client_ip)
        if "network-error" in result.error_codes:
            raise EndpointProblem(503, "captcha.provider_unavailable", "The CAPTCHA provider did not answer; retry.",
                           (("Retry-After", "5"),))
        if not result.success:
            raise EndpointProblem(403, "captcha.provider_failed", "The CAPTCHA was not solved.",
                           error_codes=list(result.error_codes))
        return scope, rt.providers[kind].settings.level

    # -- assets ---------------------------------------------------------------------------------------
    def _asset(self, name: str) -> Handler:
        content_type, body = self.page.assets[name]

        async def serve(ctx: RequestContext, receive: Receive, send: Send) -> int:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"public, max-age=3600"), (b"x-content-type-options", b"nosniff"),
                (b"cross-origin-resource-policy", b"same-origin"), (b"tsgate-decision", ctx.decision_id.encode())]})
            await send({"type": "http.response.body", "body": body if ctx.method != "HEAD" else b""})
            return 200

        return serve
