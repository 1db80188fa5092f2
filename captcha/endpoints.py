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

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from captcha.page import ChallengePage
from captcha.runtime import CLEARANCE_HEADER, CaptchaRuntime
from gateway.core.asgi import BodyTooLarge, ClientGone, Receive, Send, read_body, send_json, send_problem
from gateway.core.context import RequestContext

__all__ = ["CaptchaEndpoints"]

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]
MAX_BODY = 16 * 1024
_FORM_PROVIDERS = {"cf-turnstile-response": "turnstile", "h-captcha-response": "hcaptcha"}


class _Problem(Exception):
    """Control flow inside this module only: answer with a problem and stop."""

    def __init__(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = (),
                 **extra: Any) -> None:
        self.status, self.reason, self.detail, self.headers, self.extra = status, reason, detail, headers, extra


def _one(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found else None


class CaptchaEndpoints:
    def __init__(self, runtime: CaptchaRuntime, page: ChallengePage) -> None:
        self.runtime = runtime
        self.page = page
        self.base = runtime.own_prefix

    def routes(self) -> dict[str, Handler]:
        routes = {self.base + "challenge": self._wrap(self.challenge, "GET"),
                  self.base + "verify": self._wrap(self.verify, "POST")}
        for name in self.page.assets:
            routes[self.base + name] = self._wrap(self._asset(name), "GET")
        return routes

    def _wrap(self, handler: Handler, method: str) -> Handler:
        async def run(ctx: RequestContext, receive: Receive, send: Send) -> int:
            if ctx.method != method and not (method == "GET" and ctx.method == "HEAD"):
                await send_problem(send, 405, "request.method_not_allowed", ctx.decision_id, f"Use {method}.",
                                   (("Allow", method),))
                return 405
            try:
                return await handler(ctx, receive, send)
            except _Problem as problem:
                await send_problem(send, problem.status, problem.reason, ctx.decision_id, problem.detail,
                                   problem.headers, **problem.extra)
                return problem.status

        return run

    async def _budget(self, ctx: RequestContext, kind: str, per_minute: int) -> None:
        if not await self.runtime.attempt_allowed(kind, ctx.client_ip, per_minute):
            raise _Problem(429, "captcha.too_many_attempts", f"Too many CAPTCHA {kind} requests; slow down.",
                           (("Retry-After", "60"),))

    # -- GET challenge --------------------------------------------------------------------------------
    async def challenge(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        settings = rt.settings
        query = parse_qs(ctx.query.decode("latin-1"), max_num_fields=8)
        scope = _one(query, "scope") or "default"
        if scope not in settings.scopes:
            raise _Problem(400, "captcha.unknown_scope", "No rule or route group has this scope.", scope=scope[:64])
        raw_level = _one(query, "level")
        level = settings.scope_route(scope).level
        if raw_level is not None:
            if not raw_level.isdigit() or not 1 <= int(raw_level) <= settings.max_level:
                raise _Problem(400, "captcha.bad_level", f"level must be 1..{settings.max_level}.")
            level = int(raw_level)
        await self._budget(ctx, "issue", settings.issue_per_minute)
        body = await rt.issue_challenge(scope, level, await rt.binding(ctx))
        await send_json(send, 200, body, ctx.decision_id)
        return 200

    # -- POST verify ----------------------------------------------------------------------------------
    async def _fields(self, ctx: RequestContext, receive: Receive) -> dict[str, Any]:
        content_type = (ctx.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type not in (b"application/json", b"application/x-www-form-urlencoded"):
            raise _Problem(415, "request.unsupported_media_type",
                           "Send application/json or application/x-www-form-urlencoded.")
        try:
            raw = await read_body(receive, MAX_BODY)
        except BodyTooLarge:
            raise _Problem(413, "request.body_too_large", f"The body exceeds {MAX_BODY} bytes.") from None
        except ClientGone:
            raise _Problem(400, "request.incomplete", "The request body did not arrive.") from None
        if content_type == b"application/json":
            try:
                data = json.loads(raw or b"{}")
            except (ValueError, RecursionError):
                raise _Problem(400, "request.bad_json", "The body is not valid JSON.") from None
            if not isinstance(data, dict):
                raise _Problem(400, "request.bad_json", "The body must be a JSON object.")
            return data
        try:
            form = parse_qs(raw.decode("utf-8"), max_num_fields=16, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise _Problem(400, "request.bad_form", "The form body is not valid.") from None
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
                raise _Problem(400, reason, "Send the widget's payload in the 'altcha' field.")
            if reason == "captcha.expired":
                raise _Problem(403, reason, "The challenge expired; fetch a new one.")
            if reason != "ok":
                await rt.ladder.strike(binding, rt.settings.scope_route(verdict.scope).escalate
                                       if verdict.scope in rt.settings.scopes else rt.settings.escalate)
                detail = ("This challenge was already used." if reason == "captcha.replayed"
                          else "The solution does not match the challenge.")
                raise _Problem(403, reason, detail)
            scope, level = verdict.scope, verdict.level
        route = rt.settings.scope_route(scope)
        refused = rt.ladder.past_challenge(await rt.ladder.strikes(binding), route.escalate, scope)
        if refused is not None:  # the ladder moved past challenges: a solve buys nothing now
            raise _Problem(403, "captcha.denied", "Too many failed or spent challenges; try again later.",
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
            raise _Problem(400, "captcha.unknown_provider", "This CAPTCHA provider is not configured.")
        if not isinstance(scope, str) or scope not in rt.settings.scopes:
            raise _Problem(400, "captcha.unknown_scope", "No rule or route group has this scope.")
        if not isinstance(token, str):
            raise _Problem(400, "captcha.malformed", "Send the provider's token in 'response'.")
        result = await rt.check_provider(kind, token, ctx.client_ip)
        if "network-error" in result.error_codes:
            raise _Problem(503, "captcha.provider_unavailable", "The CAPTCHA provider did not answer; retry.",
                           (("Retry-After", "5"),))
        if not result.success:
            raise _Problem(403, "captcha.provider_failed", "The CAPTCHA was not solved.",
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
