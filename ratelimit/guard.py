"""The rate limit guard: every applicable spec checked in order, the first exceeded one decides.

Per spec: exempt roles or CIDRs skip it; a key that cannot be composed (anonymous request on a
``user`` key, absent header, ...) skips it; a store failure follows the spec's ``fail`` mode
(``closed`` → 503 ``ratelimit.unavailable``, ``open`` → a ``ratelimit.store_unavailable``
signal and the request goes on). An exceeded limit denies (429 with ``Retry-After``),
challenges (level 2) or, in ``shadow`` mode, only records a ``ratelimit.shadow_exceeded``
signal. Shadow specs are invisible to clients: they never appear in RateLimit headers.

Specs after a refusing one are not charged. Headers for allowed requests are kept (bounded)
by decision id for the proxy to attach to the upstream response: ``pop_headers``."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision, Deny, Signal
from gateway.core.guard import OnError
from ratelimit.headers import rate_limit_headers, retry_after
from ratelimit.keys import ParsedBody, compose_key
from ratelimit.limiter import Limiter, LimitResult
from ratelimit.spec import LimitSpec

__all__ = ["OUTCOMES", "RateLimitGuard"]

OUTCOMES: tuple[str, ...] = ("allowed", "limited", "shadow_limited", "store_errors")
MAX_PENDING_HEADERS = 10_000


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


class RateLimitGuard:
    """Guard over a list of ``LimitSpec``s sharing one ``Limiter``."""

    on_error: OnError = "open"  # failures are handled per spec, inside check

    def __init__(self, specs: list[LimitSpec], limiter: Limiter, name: str = "ratelimit") -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"specs: duplicate limit names {duplicates}")
        self.name = name
        self.specs = tuple(specs)
        self.limiter = limiter
        self.needs_body = any(spec.needs_body for spec in specs)
        self._any_cidr_exemption = any(spec.exempt_cidrs for spec in specs)
        self._counters: dict[str, dict[str, int]] = {n: dict.fromkeys(OUTCOMES, 0) for n in names}
        self._pending: OrderedDict[str, tuple[tuple[str, str], ...]] = OrderedDict()

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """A snapshot ``{spec name: {outcome: count}}`` for export (e.g. to Prometheus)."""
        return {n: dict(c) for n, c in self._counters.items()}

    def pop_headers(self, decision_id: str) -> tuple[tuple[str, str], ...]:
        """RateLimit headers for an allowed request, once (empty when none were recorded)."""
        return self._pending.pop(decision_id, ())

    async def check(self, ctx: RequestContext) -> Decision:
        body = ParsedBody(ctx)
        roles = ctx.principal.roles if ctx.principal is not None else frozenset()
        addr = _address(ctx.client_ip) if self._any_cidr_exemption else None
        visible: list[tuple[LimitSpec, LimitResult]] = []
        for spec in self.specs:
            if roles & spec.exempt_roles:
                continue
            if addr is not None and any(addr in net for net in spec.exempt_cidrs):
                continue
            identifier = compose_key(spec, ctx, body)
            if identifier is None:
                continue
            deferred = bool(spec.count_on)
            result = await self.limiter.check(spec, identifier, charge=not deferred)
            counts = self._counters[spec.name]
            if deferred and result.error is None and result.allowed:
                ctx.after_response.append(self._charge_if(spec, identifier))
            if result.error is not None:
                counts["store_errors"] += 1
                if spec.fail == "closed":
                    wait = str(max(1, math.ceil(self.limiter.breaker.cooldown)))
                    return Deny(
                        503,
                        "ratelimit.unavailable",
                        f"Limit '{spec.name}' cannot be checked right now.",
                        headers=(("Retry-After", wait),),
                    )
                ctx.add_signal(Signal("ratelimit.store_unavailable", 0.0, f"{spec.name}: {result.error}"))
                continue
            if spec.on_exceed == "shadow":
                if result.allowed:
                    counts["allowed"] += 1
                else:
                    counts["shadow_limited"] += 1
                    ctx.add_signal(Signal("ratelimit.shadow_exceeded", 1.0, f"{spec.name}: {result.limit}"))
                continue
            visible.append((spec, result))
            if result.allowed:
                counts["allowed"] += 1
                continue
            counts["limited"] += 1
            headers = (*rate_limit_headers(visible), ("Retry-After", retry_after(result)))
            detail = f"Limit '{spec.name}' exceeded."
            if spec.on_exceed == "challenge":
                return Challenge("ratelimit.exceeded", level=2, detail=detail, headers=headers)
            return Deny(429, "ratelimit.exceeded", detail, headers=headers)
        if visible:
            headers = tuple(rate_limit_headers(visible))
            self._remember(ctx.decision_id, headers)
            ctx.response_headers.extend(headers)  # the proxy adds these to the upstream's response
        return ALLOW

    def _charge_if(self, spec: LimitSpec, identifier: str) -> Callable[[int], Awaitable[None]]:
        async def charge(status: int) -> None:
            if status in spec.count_on and not await self.limiter.charge(spec, identifier):
                self._counters[spec.name]["store_errors"] += 1

        return charge

    def _remember(self, decision_id: str, headers: tuple[tuple[str, str], ...]) -> None:
        self._pending[decision_id] = headers
        while len(self._pending) > MAX_PENDING_HEADERS:  # unclaimed headers are only advice
            self._pending.popitem(last=False)
