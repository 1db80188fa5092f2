"""Limiter: exact, multi-window, cost, bounded in time (breaker) and in memory."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from gateway.core.clock import FrozenClock
from ratelimit.breaker import CircuitBreaker
from ratelimit.limiter import ERROR_CIRCUIT_OPEN, ERROR_FULL, Limiter
from ratelimit.spec import LimitSpec, Strategy
from tests.ratelimit.conftest import LimiterFactory

STRATEGIES: list[Strategy] = ["sliding-window", "moving-window", "fixed-window"]


def state(breaker: CircuitBreaker) -> str:
    """The breaker state, re-read (mypy would narrow a property across calls)."""
    return breaker.state


def ident() -> str:
    return "t:" + uuid.uuid4().hex


async def test_exact_under_concurrency(make_limiter: LimiterFactory) -> None:
    """300 concurrent checks against 50/minute admit exactly 50."""
    limiter = make_limiter(timeout=5.0)
    spec = LimitSpec.build("burst", "50/minute")
    who = ident()
    results = await asyncio.gather(*(limiter.check(spec, who) for _ in range(300)))
    assert [r.error for r in results if r.error] == []
    assert sum(r.allowed for r in results) == 50


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_each_strategy_is_exact(make_limiter: LimiterFactory, strategy: Strategy) -> None:
    """Every strategy admits exactly the quota, then refuses with remaining 0."""
    limiter = make_limiter(timeout=2.0)
    spec = LimitSpec.build("s", "5/minute", strategy=strategy)
    who = ident()
    outcomes = [await limiter.check(spec, who) for _ in range(8)]
    assert [r.allowed for r in outcomes] == [True] * 5 + [False] * 3
    assert [r.remaining for r in outcomes[:5]] == [4, 3, 2, 1, 0]
    assert outcomes[-1].remaining == 0 and outcomes[-1].reset_after > 0


async def test_strategies_do_not_share_keys(make_limiter: LimiterFactory) -> None:
    """Two strategies on one spec name and identifier keep separate namespaces (no type clash)."""
    limiter = make_limiter(timeout=2.0)
    who = ident()
    for strategy in STRATEGIES:
        spec = LimitSpec.build("same", "2/minute", strategy=strategy)
        outcomes = [await limiter.check(spec, who) for _ in range(3)]
        assert [r.allowed for r in outcomes] == [True, True, False]
        assert all(r.error is None for r in outcomes)


async def test_multi_window_short_window_refuses(make_limiter: LimiterFactory) -> None:
    """With "3/second; 5/minute" the 4th immediate request is refused by the per-second window."""
    limiter = make_limiter(timeout=2.0)
    spec = LimitSpec.build("mw", "3/second; 5/minute", strategy="moving-window")
    who = ident()
    outcomes = [await limiter.check(spec, who) for _ in range(4)]
    assert [r.allowed for r in outcomes] == [True, True, True, False]
    assert outcomes[3].limit.get_expiry() == 1


async def test_multi_window_long_window_refuses(make_limiter: LimiterFactory) -> None:
    """A longer window with a smaller quota refuses once it is full and is reported as the limit."""
    limiter = make_limiter(timeout=2.0)
    spec = LimitSpec.build("mw2", "5/minute; 3/hour")
    who = ident()
    outcomes = [await limiter.check(spec, who) for _ in range(4)]
    assert [r.allowed for r in outcomes] == [True, True, True, False]
    assert outcomes[2].limit.get_expiry() == 3600  # most restrictive while allowed
    assert outcomes[3].limit.get_expiry() == 3600


async def test_cost_charges_several_units(make_limiter: LimiterFactory) -> None:
    """A cost of 3 against 10/minute admits 3 requests (9 units), not 4."""
    limiter = make_limiter(timeout=2.0)
    spec = LimitSpec.build("c", "10/minute", cost=3)
    who = ident()
    outcomes = [await limiter.check(spec, who) for _ in range(4)]
    assert [r.allowed for r in outcomes] == [True, True, True, False]
    assert outcomes[2].remaining == 1


async def test_identifiers_are_independent(make_limiter: LimiterFactory) -> None:
    """One identifier exhausting its budget does not affect another."""
    limiter = make_limiter(timeout=2.0)
    spec = LimitSpec.build("i", "1/minute")
    a, b = ident(), ident()
    assert (await limiter.check(spec, a)).allowed
    assert not (await limiter.check(spec, a)).allowed
    assert (await limiter.check(spec, b)).allowed


async def test_dead_redis_fails_fast_and_opens_breaker() -> None:
    """A closed port errors within the timeout; after 3 failures calls fail without waiting."""
    limiter = Limiter("redis://127.0.0.1:1/0", timeout=0.05, breaker_cooldown=60)
    spec = LimitSpec.build("d", "5/minute")
    try:
        for _ in range(3):
            started = time.perf_counter()
            result = await limiter.check(spec, "x")
            assert time.perf_counter() - started < 0.5
            assert result.error is not None and result.error != ERROR_CIRCUIT_OPEN
            assert result.allowed
        assert state(limiter.breaker) == "open"
        started = time.perf_counter()
        result = await limiter.check(spec, "x")
        assert time.perf_counter() - started < 0.01
        assert result.error == ERROR_CIRCUIT_OPEN
    finally:
        await limiter.aclose()


async def test_slow_store_times_out() -> None:
    """A store call that hangs is cut at the timeout and reported as an error."""
    limiter = Limiter("memory://", timeout=0.05)

    class Hanging:
        async def hit(self, *args: Any, **kwargs: Any) -> bool:
            await asyncio.sleep(10)
            return True

    limiter._strategies["sliding-window"] = Hanging()  # type: ignore[assignment]
    started = time.perf_counter()
    result = await limiter.check(LimitSpec.build("h", "5/minute"), "x")
    assert time.perf_counter() - started < 0.5
    assert result.error == "store timeout"
    await limiter.aclose()


async def test_breaker_closes_when_store_returns() -> None:
    """After the cooldown one trial call goes through; its success closes the breaker."""
    clock = FrozenClock()
    limiter = Limiter("memory://", timeout=0.5, breaker_cooldown=5.0, clock=clock)
    spec = LimitSpec.build("b", "5/minute")
    real = limiter._strategies["sliding-window"]

    class Broken:
        calls = 0

        async def hit(self, *args: Any, **kwargs: Any) -> bool:
            Broken.calls += 1
            raise ConnectionError("down")

    limiter._strategies["sliding-window"] = Broken()  # type: ignore[assignment]
    for _ in range(3):
        assert (await limiter.check(spec, "x")).error is not None
    assert state(limiter.breaker) == "open"
    assert (await limiter.check(spec, "x")).error == ERROR_CIRCUIT_OPEN
    assert Broken.calls == 3  # the open breaker did not touch the store
    limiter._strategies["sliding-window"] = real
    clock.advance(5.0)
    assert state(limiter.breaker) == "half-open"
    result = await limiter.check(spec, "x")
    assert result.error is None and result.allowed
    assert state(limiter.breaker) == "closed"
    await limiter.aclose()


def test_breaker_half_open_lets_one_trial_through() -> None:
    """In half-open only one caller tries; a failed trial re-opens for a full cooldown."""
    clock = FrozenClock()
    breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow()
    assert not breaker.allow()  # second caller while the trial is in flight
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) == "closed"


async def test_memory_bound_refuses_new_keys_never_evicts() -> None:
    """With 1000 slots, a flood of 5000 identifiers gets "store full" and never a fresh budget."""
    clock = FrozenClock()
    limiter = Limiter("memory://", max_memory_keys=1000, clock=clock, timeout=1.0)
    spec = LimitSpec.build("m", "2/minute")
    victim = "blocked-client"
    for _ in range(2):
        assert (await limiter.check(spec, victim)).allowed
    assert not (await limiter.check(spec, victim)).allowed
    flood = [await limiter.check(spec, f"f{i}") for i in range(5000)]
    assert sum(r.error is None for r in flood) == 999
    assert all(r.error == ERROR_FULL for r in flood[999:])
    result = await limiter.check(spec, victim)
    assert result.error is None and not result.allowed  # counted, not evicted
    assert limiter.keyspace is not None and len(limiter.keyspace) == 1000
    clock.advance(121)  # state older than twice the window frees its slot
    assert (await limiter.check(spec, "newcomer")).error is None
    await limiter.aclose()
