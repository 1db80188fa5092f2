"""The CAPTCHA runtime: issues challenges and clearances, and resolves every Challenge.

It is the pipeline's ``ChallengeResolver``: whichever guard returned a Challenge (a limit with
``on_exceed: challenge``, the stage-40 captcha guard, the login abuse tracker), the pipeline asks
``resolve`` before stopping the request. A valid clearance for the rule's scope, at or above the
level asked for, bound to this principal and within its budget, turns the Challenge into Allow and
the remaining guards run as usual (a clearance never skips authn or later limits). Otherwise the
ladder answers: a Challenge at the escalated level, or Deny / Hold past the strike threshold."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from captcha.clearance import Clearance, ClearanceSealer, principal_binding
from captcha.keys import CaptchaKeys
from captcha.ladder import Ladder, risk_band
from captcha.metrics import CaptchaMetrics
from captcha.pow import PowIssuer, PowVerdict
from captcha.providers import Provider, ProviderResult, build_provider
from captcha.settings import CaptchaSettings, RouteCaptcha
from gateway.core.clock import Clock
from gateway.core.context import Principal, RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision, Signal
from gateway.core.state import StateStore, store_key

__all__ = ["CLEARANCE_HEADER", "CaptchaRuntime", "Identify", "Issued", "PresentResult"]

CLEARANCE_HEADER = "Tsgate-Clearance"
MAX_PRESENTED = 4
Identify = Callable[[RequestContext], Awaitable[Principal | None]]
PresentResult = Literal["accepted", "spent", "foreign", "tampered", "expired", "insufficient", "other_scope"]
_STRIKING: frozenset[str] = frozenset({"spent", "foreign", "tampered"})


@dataclass(frozen=True, slots=True)
class Issued:
    clearance: Clearance
    token: str


class CaptchaRuntime:
    def __init__(self, settings: CaptchaSettings, keys: CaptchaKeys, store: StateStore, clock: Clock, *,
                 metrics: CaptchaMetrics | None = None, identify: Identify | None = None,
                 providers: dict[str, Provider] | None = None, max_concurrent_issues: int = 2) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics or CaptchaMetrics()
        self.identify = identify
        self.sealer = ClearanceSealer(keys)
        self.pow = PowIssuer(keys, clock, algorithm=settings.algorithm, levels=settings.levels,
                             ttl=settings.challenge_ttl)
        self.ladder = Ladder(store, settings.max_level)
        self.providers: dict[str, Provider] = providers if providers is not None else {
            p.kind: build_provider(p) for p in settings.providers}
        self.own_prefix = settings.prefix + "captcha/"
        # Issuing costs a key derivation: bound how many run at once (the rest wait their turn).
        self._issuing = asyncio.Semaphore(max_concurrent_issues)

    # -- who is asking ----------------------------------------------------------------------------
    async def binding(self, ctx: RequestContext) -> str:
        """The principal binding. On tsgate's own endpoints and before authn has run the request's
        credential is checked here (``identify``), so a signed-in user's clearance is bound to the
        account wherever the challenge came from."""
        principal = ctx.principal
        if (principal is None or not principal.authenticated) and self.identify is not None:
            if ctx.header(b"authorization") is not None:
                principal = await self.identify(ctx) or principal
        return principal_binding(principal, ctx.client_ip, ctx.header(b"user-agent"))

    def cookie_name(self, scope: str) -> str:
        return f"{self.settings.cookie_name}_{scope}"

    def _presented(self, ctx: RequestContext, scope: str) -> list[str]:
        tokens: list[str] = []
        for name, value in ctx.headers:
            if name == b"tsgate-clearance":
                tokens.extend(t.strip() for t in value.decode("latin-1").split(","))
            elif name == b"cookie":
                wanted = self.cookie_name(scope)
                for part in value.decode("latin-1").split(";"):
                    key, _, cookie = part.strip().partition("=")
                    if key == wanted:
                        tokens.append(cookie.strip())
        return [t for t in tokens if t][:MAX_PRESENTED]

    # -- the resolver -------------------------------------------------------------------------------
    def challenge_url(self, ctx: RequestContext, challenge: Challenge) -> str:
        scope = self.settings.route(ctx.rule_id).scope
        return f"{self.own_prefix}challenge?" + urlencode({"scope": scope, "level": challenge.level})

    async def resolve(self, ctx: RequestContext, challenge: Challenge) -> Decision:
        if ctx.path.startswith(self.own_prefix):
            return ALLOW  # never challenge the way out of a challenge (they have their own limits)
        route = self.settings.route(ctx.rule_id)
        binding = await self.binding(ctx)
        strikes = await self.ladder.strikes(binding)
        band = risk_band(sum(s.weight for s in ctx.signals))
        base = route.level if route.trigger != "none" else challenge.level
        level = self.ladder.level(base, strikes, band)
        if self._already_cleared(ctx, route.scope, level):
            return ALLOW  # one clearance use per request, however many guards challenge it
        for token in self._presented(ctx, route.scope):
            result = await self.present(token, binding, route.scope, level)
            self.metrics.clearances.labels(result, route.scope).inc()
            if result == "accepted":
                ctx.add_signal(Signal("captcha.cleared", 0.0, f"{route.scope} level {level}"))
                # tsgate's credential, not the backend's: it is not forwarded upstream.
                ctx.headers[:] = [(n, v) for n, v in ctx.headers if n != b"tsgate-clearance"]
                return ALLOW
            if result in _STRIKING:
                strikes = await self.ladder.strike(binding, route.escalate)
                ctx.add_signal(Signal("captcha.clearance_" + result, 1.0, route.scope))
        past = self.ladder.past_challenge(strikes, route.escalate, route.scope)
        if past is not None:
            self.metrics.escalations.labels(route.escalate.then, route.scope).inc()
            return past
        level = self.ladder.level(base, strikes, band)
        return Challenge(challenge.reason, challenge.challenge, level, challenge.detail, challenge.headers)

    @staticmethod
    def _already_cleared(ctx: RequestContext, scope: str, level: int) -> bool:
        for signal in ctx.signals:
            if signal.name == "captcha.cleared":
                cleared_scope, _, cleared_level = signal.evidence.rpartition(" level ")
                if cleared_scope == scope and cleared_level.isdigit() and int(cleared_level) >= level:
                    return True
        return False

    async def present(self, token: str, binding: str, scope: str, level: int) -> PresentResult:
        """Check one presented clearance; spends one use of its budget when it is accepted."""
        clearance = self.sealer.open(token)
        if clearance is None:
            return "tampered"
        if clearance.binding != binding:
            return "foreign"
        if clearance.scope != scope:
            return "other_scope"
        now = self.clock.now()
        if clearance.expires_at <= now:
            return "expired"
        if clearance.level < level:
            return "insufficient"
        if clearance.uses > 0:
            used = await self.store.incr(store_key("captcha-use", clearance.id), ttl=clearance.expires_at - now + 1)
            if used > clearance.uses:
                return "spent"
        return "accepted"

    # -- issuing and verifying ----------------------------------------------------------------------
    async def issue_challenge(self, scope: str, level: int, binding: str) -> dict[str, Any]:
        async with self._issuing:
            challenge = await asyncio.to_thread(self.pow.create, scope, level, binding)
        self.metrics.challenge("issued", level, scope)
        return challenge

    async def attempt_allowed(self, kind: str, client_ip: str, per_minute: int) -> bool:
        """A per-IP budget on issuing and verifying (SECURITY.md class 7: brute-forcing verify,
        and challenge floods that would make us derive keys for nothing)."""
        return await self.store.incr(store_key("captcha-" + kind, client_ip), ttl=60) <= per_minute

    async def check_solution(self, raw: object, binding: str) -> tuple[PowVerdict, str]:
        """Verify a PoW solution and accept it once. Returns the verdict and a stable reason:
        ``ok``, ``captcha.expired``, ``captcha.invalid``, ``captcha.replayed``, ``captcha.malformed``."""
        verdict = self.pow.check(raw)
        if verdict.outcome == "malformed":
            return verdict, "captcha.malformed"
        if verdict.outcome == "expired":
            self.metrics.challenge("expired", verdict.level, verdict.scope or "unknown")
            return verdict, "captcha.expired"
        if verdict.outcome != "ok" or verdict.binding != binding or verdict.scope not in self.settings.scopes:
            self.metrics.challenge("failed", verdict.level, verdict.scope or "unknown")
            return verdict, "captcha.invalid"
        ttl = max(1.0, verdict.expires_at - self.clock.now() + 1)
        if not await self.store.set_if_absent(store_key("captcha-used", verdict.nonce), b"1", ttl):
            self.metrics.challenge("replayed", verdict.level, verdict.scope)
            return verdict, "captcha.replayed"
        self.metrics.challenge("solved", verdict.level, verdict.scope)
        self.metrics.solve_seconds.labels(str(verdict.level)).observe(max(0.0, self.clock.now() - verdict.issued_at))
        return verdict, "ok"

    async def check_provider(self, kind: str, token: str, client_ip: str) -> ProviderResult:
        provider = self.providers[kind]
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        # Providers refuse a second use themselves; this keeps a token single-use even if a
        # provider (or a stand-in) does not, for the 300 s a token lives.
        if not await self.store.set_if_absent(store_key("captcha-provider", kind, digest), b"1", 300.0):
            result = ProviderResult(False, ("timeout-or-duplicate",))
        else:
            result = await provider.verify(token, client_ip)
        self.metrics.providers.labels(kind, "success" if result.success else "failure").inc()
        return result

    def grant(self, binding: str, scope: str, level: int) -> Issued:
        route: RouteCaptcha = self.settings.scope_route(scope)
        now = int(self.clock.now())
        clearance = Clearance(self.sealer.new_id(), binding, scope, level, now, now + int(route.clearance_ttl),
                              route.uses)
        return Issued(clearance, self.sealer.seal(clearance))

    def cookie(self, issued: Issued) -> tuple[str, str]:
        s = self.settings
        attrs = [f"{self.cookie_name(issued.clearance.scope)}={issued.token}", "Path=/", "HttpOnly",
                 f"SameSite={s.cookie_same_site.capitalize()}",
                 f"Max-Age={max(1, issued.clearance.expires_at - issued.clearance.issued_at)}"]
        if s.cookie_secure:
            attrs.append("Secure")
        return ("Set-Cookie", "; ".join(attrs))
