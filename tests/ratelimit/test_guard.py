"""RateLimitGuard: decisions, exemptions, fail modes, headers and counters."""

from __future__ import annotations

import limits
import pytest

from gateway.core.decisions import ALLOW, Challenge, Deny
from ratelimit.guard import RateLimitGuard
from ratelimit.limiter import Limiter, LimitResult
from ratelimit.spec import LimitSpec
from tests.ratelimit.conftest import LimiterFactory, make_ctx, user


class StubLimiter(Limiter):
    """A limiter whose store always fails with ``error``."""

    def __init__(self, error: str) -> None:
        super().__init__("memory://")
        self.error = error

    async def check(self, spec: LimitSpec, identifier: str, *, charge: bool = True) -> LimitResult:
        return LimitResult(True, spec.rates[0], spec.rates[0].amount, 0.0, self.error)


async def test_deny_429_with_headers(make_limiter: LimiterFactory) -> None:
    """Past the quota the guard denies 429 with Retry-After and RateLimit headers."""
    guard = RateLimitGuard([LimitSpec.build("login", "2/minute")], make_limiter(timeout=2.0))
    ip = "192.0.2.10"
    assert await guard.check(make_ctx(ip=ip)) is ALLOW
    assert await guard.check(make_ctx(ip=ip)) is ALLOW
    decision = await guard.check(make_ctx(ip=ip))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason, decision.detail) == (429, "ratelimit.exceeded", "Limit 'login' exceeded.")
    headers = dict(decision.headers)
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit"].startswith('"login";r=0;t=')
    assert headers["RateLimit-Policy"] == '"login";q=2;w=60'
    assert guard.counters["login"] == {"allowed": 2, "limited": 1, "shadow_limited": 0, "store_errors": 0}


async def test_headers_for_allowed_requests(make_limiter: LimiterFactory) -> None:
    """Allowed requests leave their RateLimit headers for the proxy, once, by decision id."""
    guard = RateLimitGuard([LimitSpec.build("api", "10/minute")], make_limiter(timeout=2.0))
    ctx = make_ctx(decision_id="d-1")
    assert await guard.check(ctx) is ALLOW
    headers = dict(guard.pop_headers("d-1"))
    assert headers["RateLimit"] == '"api";r=9;t=' + headers["RateLimit"].rsplit("=", 1)[1]
    assert guard.pop_headers("d-1") == ()


async def test_challenge_mode() -> None:
    """on_exceed=challenge asks for a level-2 challenge instead of denying."""
    guard = RateLimitGuard([LimitSpec.build("c", "1/minute", on_exceed="challenge")], Limiter("memory://"))
    await guard.check(make_ctx())
    decision = await guard.check(make_ctx())
    assert isinstance(decision, Challenge)
    assert decision.reason == "ratelimit.exceeded" and decision.level == 2
    await guard.limiter.aclose()


async def test_shadow_mode_only_signals() -> None:
    """on_exceed=shadow lets the request through with a signal and no client-visible header."""
    guard = RateLimitGuard([LimitSpec.build("s", "1/minute", on_exceed="shadow")], Limiter("memory://"))
    await guard.check(make_ctx())
    ctx = make_ctx(decision_id="d-2")
    assert await guard.check(ctx) is ALLOW
    assert [s.name for s in ctx.signals] == ["ratelimit.shadow_exceeded"]
    assert guard.pop_headers("d-2") == ()
    assert guard.counters["s"]["shadow_limited"] == 1
    await guard.limiter.aclose()


async def test_exempt_role_and_cidr() -> None:
    """Exempt roles and CIDRs are never counted."""
    spec = LimitSpec.build("x", "1/minute", exempt_roles=["staff"], exempt_cidrs=["10.0.0.0/8", "2001:db8::/32"])
    guard = RateLimitGuard([spec], Limiter("memory://"))
    staff = user("s1", roles=frozenset({"staff"}))
    for _ in range(3):
        assert await guard.check(make_ctx(principal=staff)) is ALLOW
        assert await guard.check(make_ctx(ip="10.1.2.3")) is ALLOW
        assert await guard.check(make_ctx(ip="2001:db8::5")) is ALLOW
    assert guard.counters["x"]["allowed"] == 0
    await guard.limiter.aclose()


async def test_missing_key_part_skips_the_limit() -> None:
    """A user-keyed limit does not apply to anonymous requests."""
    guard = RateLimitGuard([LimitSpec.build("u", "1/minute", key=("user",))], Limiter("memory://"))
    for _ in range(3):
        assert await guard.check(make_ctx()) is ALLOW
    await guard.limiter.aclose()


async def test_body_keyed_login_limit_across_ips() -> None:
    """A login limit keyed by the normalized email holds across IPs and spellings."""
    guard = RateLimitGuard([LimitSpec.build("login", "2/minute", key=("body:/email",))], Limiter("memory://"))
    assert guard.needs_body
    spellings = [b'{"email": "Bob@Example.com"}', b'{"email": " bob@example.COM"}', b'{"email": "BOB@example.com"}']
    decisions = [await guard.check(make_ctx(ip=f"198.51.100.{i}", body=b)) for i, b in enumerate(spellings)]
    assert decisions[:2] == [ALLOW, ALLOW]
    assert isinstance(decisions[2], Deny)
    await guard.limiter.aclose()


async def test_fail_closed_denies_503() -> None:
    """A store failure on a fail-closed limit answers 503 ratelimit.unavailable."""
    guard = RateLimitGuard([LimitSpec.build("fc", "5/minute", fail="closed")], StubLimiter("store timeout"))
    decision = await guard.check(make_ctx())
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (503, "ratelimit.unavailable")
    assert guard.counters["fc"]["store_errors"] == 1


async def test_fail_open_signals_and_continues() -> None:
    """A store failure on a fail-open limit admits the request with a store_unavailable signal."""
    guard = RateLimitGuard([LimitSpec.build("fo", "5/minute")], StubLimiter("store full"))
    ctx = make_ctx()
    assert await guard.check(ctx) is ALLOW
    assert [(s.name, s.evidence) for s in ctx.signals] == [("ratelimit.store_unavailable", "fo: store full")]


async def test_dead_redis_fail_closed_is_fast() -> None:
    """Against a dead Redis, a fail-closed limit answers 503 quickly rather than hanging."""
    limiter = Limiter("redis://127.0.0.1:1/0", timeout=0.05)
    guard = RateLimitGuard([LimitSpec.build("r", "5/minute", fail="closed")], limiter)
    decision = await guard.check(make_ctx())
    assert isinstance(decision, Deny) and decision.status == 503
    await limiter.aclose()


def test_duplicate_names_refused() -> None:
    """Two specs with one name would share counters: refused at construction."""
    spec = LimitSpec.build("d", "5/minute")
    with pytest.raises(ValueError, match="duplicate"):
        RateLimitGuard([spec, spec], Limiter("memory://"))


def test_guard_protocol_fields() -> None:
    """The guard exposes the Guard protocol fields."""
    guard = RateLimitGuard([LimitSpec.build("p", "5/minute")], Limiter("memory://"))
    assert (guard.name, guard.on_error, guard.needs_body) == ("ratelimit", "open", False)
    assert limits.parse("5/minute") == guard.specs[0].rates[0]
