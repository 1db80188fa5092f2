"""The captcha guard: a rule's own reasons to challenge (``captcha:`` in the policy).

- ``always``: every request of the rule needs a clearance;
- ``risk_at_least: BAND``: the request's signals (from earlier guards) reach the band;
- ``after_failures: N``: this principal got N failure answers (401/403 by default) from the
  rule within the window — counted after each response, reset by a success;
- ``on_limit: NAME``: the named limit (with ``on_exceed: shadow``) is exceeded for this request.

It only returns Challenge values; whether a clearance satisfies them is the resolver's business
(``CaptchaRuntime.resolve``), exactly as for a Challenge from any other guard. Built at stage 40
(after authn), and at stage 55 for ``on_limit`` so that limits keyed by the user have run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from captcha.clearance import principal_binding
from captcha.ladder import band_at_least, risk_band
from captcha.settings import RouteCaptcha
from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision
from gateway.core.guard import OnError
from gateway.core.state import StateStore, store_key

__all__ = ["CaptchaGuard"]

_SHADOW_EXCEEDED = "ratelimit.shadow_exceeded"


class CaptchaGuard:
    """One rule's trigger. Fails open (with the pipeline's alarm): a CAPTCHA is friction, and a
    broken store must not lock everyone out of a route that authn and limits still protect."""

    on_error: OnError = "open"
    needs_body = False

    def __init__(self, route: RouteCaptcha, store: StateStore, name: str = "captcha") -> None:
        self.route = route
        self.store = store
        self.name = name
        self._challenge = Challenge(f"captcha.{route.trigger}", level=route.level,
                                    detail="Solve the challenge, then retry with the clearance.")

    async def check(self, ctx: RequestContext) -> Decision:
        route = self.route
        trigger = route.trigger
        if trigger == "always":
            return self._challenge
        if trigger == "risk_at_least":
            band = risk_band(sum(s.weight for s in ctx.signals))
            return self._challenge if band_at_least(band, route.risk_at_least) else ALLOW
        if trigger == "on_limit":
            marker = route.on_limit + ":"
            hit = any(s.name == _SHADOW_EXCEEDED and s.evidence.startswith(marker) for s in ctx.signals)
            return self._challenge if hit else ALLOW
        if trigger == "after_failures":
            key = store_key("captcha-fail", principal_binding(ctx.principal, ctx.client_ip,
                                                              ctx.header(b"user-agent")), route.scope)
            ctx.after_response.append(self._count(key))
            if await self.store.get_counter(key) >= route.after_failures:
                return self._challenge
        return ALLOW

    def _count(self, key: str) -> Callable[[int], Awaitable[None]]:
        async def count(status: int) -> None:
            if status in self.route.failure_statuses:
                await self.store.incr(key, ttl=self.route.failure_window)
            elif 200 <= status < 400:
                await self.store.delete(key)  # consecutive failures, like the login tracker

        return count
