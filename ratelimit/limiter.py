"""The limiter: a spec's rates checked against shared storage, bounded in time and memory.

Storage is chosen by URL (``memory://``, ``redis://host:port/db``, ``redis+cluster://h:p,h:p``;
the ``async+`` prefix is optional) and the algorithm by the spec's strategy, one
``limits.aio`` strategy object per kind over the same storage. Each strategy has its own key
namespace (the strategy tag is the first identifier), so strategies never share a key.

Failures never raise: they come back as ``LimitResult.error`` and the guard applies the spec's
fail mode. ``reset()`` is never called: clearing storage would hand every client a new budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string
from limits.util import get_dependency

from gateway.core.clock import Clock
from gateway.core.state.autopipe import AutoPipeline
from ratelimit.breaker import CircuitBreaker
from ratelimit.keyspace import KeySpace
from ratelimit.redis_windows import SlidingWindowScript
from ratelimit.spec import LimitSpec

__all__ = ["LimitResult", "Limiter"]

T = TypeVar("T")

ERROR_TIMEOUT = "store timeout"
ERROR_UNAVAILABLE = "store unavailable"
ERROR_CIRCUIT_OPEN = "store unavailable (circuit open)"
ERROR_FULL = "store full"

_TAGS = {"sliding-window": "swc", "moving-window": "mw", "fixed-window": "fw"}


@dataclass(frozen=True, slots=True)
class LimitResult:
    """The outcome of one spec check.

    ``limit`` is the exceeded rate when refused, else the most restrictive one (fewest remaining,
    then longest reset). ``reset_after`` is seconds until that rate frees capacity. When ``error``
    is set the check did not complete: ``allowed`` is True and the caller applies the fail mode."""

    allowed: bool
    limit: RateLimitItem
    remaining: int
    reset_after: float
    error: str | None = None


def _normalize_url(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


class Limiter:
    """Check ``LimitSpec``s against one storage.

    ``timeout`` bounds every storage call; ``breaker_cooldown`` is how long a dead store is left
    alone after 3 consecutive failures; ``max_memory_keys`` bounds live identifiers for
    ``memory://`` (new identifiers are refused with "store full", live ones are never evicted);
    ``max_connections`` sizes the blocking Redis pool (a burst waits for a connection, within
    ``timeout``, instead of failing).

    On Redis, a sliding-window check (the default strategy) is one Lua call that charges every
    rate and returns the window state (``ratelimit.redis_windows``; one call per rate on a
    cluster), auto-pipelined with the process's other Redis commands. The other strategies go
    through ``limits.aio``: up to n ``hit`` round trips (sequential, stopping at the first
    refusal) plus n window-stats calls issued concurrently (1 when refused); fixed-window stats
    are GET + TTL. Note that limits' fixed window also counts refused hits in the current window."""

    def __init__(
        self,
        storage_url: str,
        *,
        timeout: float = 0.05,
        breaker_cooldown: float = 5.0,
        max_memory_keys: int = 1_000_000,
        key_prefix: str = "tsgate-rl",
        clock: Clock | None = None,
        breaker_threshold: int = 3,
        max_connections: int = 128,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout: must be > 0")
        url = _normalize_url(storage_url)
        self.timeout = timeout
        self.is_memory = url.startswith("async+memory://")
        options: dict[str, Any] = {}
        self._pool: Any = None
        if not self.is_memory and url.startswith(("async+redis", "async+rediss")):
            io_timeout = max(timeout * 4, 0.2)
            options = {"implementation": "redispy", "key_prefix": key_prefix}
            if "cluster" in url or "sentinel" in url:
                options.update(socket_timeout=io_timeout, socket_connect_timeout=io_timeout)
            else:
                # A blocking pool: a burst waits (bounded by ``timeout``) for a connection instead
                # of failing with "too many connections" and tripping the breaker on a healthy Redis.
                redis_asyncio, _ = get_dependency("redis.asyncio")
                self._pool = redis_asyncio.BlockingConnectionPool.from_url(
                    url.removeprefix("async+"),
                    max_connections=max_connections,
                    timeout=timeout,
                    socket_timeout=io_timeout,
                    socket_connect_timeout=io_timeout,
                )
                options["connection_pool"] = self._pool
        self.storage: Storage = storage_from_string(url, **options)  # type: ignore[assignment]
        self._strategies: dict[str, RateLimiter] = {
            "sliding-window": SlidingWindowCounterRateLimiter(self.storage),
            "moving-window": MovingWindowRateLimiter(self.storage),
            "fixed-window": FixedWindowRateLimiter(self.storage),
        }
        self.pipe: AutoPipeline | None = None
        self._windows: SlidingWindowScript | None = None
        if not self.is_memory and url.startswith(("async+redis", "async+rediss")):
            client = self.storage.bridge.get_connection()  # type: ignore[attr-defined]
            self.pipe = AutoPipeline(client, timeout=timeout)
            self._windows = SlidingWindowScript(self.pipe, key_prefix, cluster="cluster" in url)
        self.breaker = CircuitBreaker(threshold=breaker_threshold, cooldown=breaker_cooldown, clock=clock)
        self.keyspace: KeySpace | None = KeySpace(max_memory_keys, clock=clock) if self.is_memory else None

    async def _bounded(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self.timeout)

    async def check(self, spec: LimitSpec, identifier: str, *, charge: bool = True) -> LimitResult:
        """Charge ``spec.cost`` to every rate of ``spec`` for ``identifier`` (with ``charge=False``
        only test whether it would fit: used by limits that count after the response).

        Rates are hit in order and the first refusal stops: windows hit before it stay charged
        (a refused request still counts against the shorter windows, which errs on the strict
        side and keeps each hit a single atomic storage operation)."""
        strategy = self._strategies[spec.strategy]
        tag = _TAGS[spec.strategy]
        first = spec.rates[0]
        if self.keyspace is not None:
            ttl = 2.0 * max(rate.get_expiry() for rate in spec.rates)
            if not self.keyspace.admit(identifier, ttl):
                return LimitResult(True, first, first.amount, 0.0, ERROR_FULL)
        if not self.breaker.allow():
            return LimitResult(True, first, first.amount, 0.0, ERROR_CIRCUIT_OPEN)
        try:
            if self._windows is not None and spec.strategy == "sliding-window":
                return self._record(await self._sliding_windows(self._windows, spec, identifier, charge))
            exceeded: RateLimitItem | None = None
            for rate in spec.rates:
                op = strategy.hit if charge else strategy.test
                if not await self._bounded(op(rate, tag, identifier, cost=spec.cost)):
                    exceeded = rate
                    break
            rates = (exceeded,) if exceeded is not None else spec.rates
            stats = await self._bounded(
                asyncio.gather(*(strategy.get_window_stats(rate, tag, identifier) for rate in rates))
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # foreign storage errors stop here; none leak to the guard
            return self._failed(first, exc)
        self.breaker.record_success()
        now = time.time()  # limits stamps windows with the wall clock; so must we
        views = [
            (rate, max(0, int(st.remaining)), max(0.0, st.reset_time - now))
            for rate, st in zip(rates, stats, strict=True)
        ]
        if exceeded is not None:
            _, _, reset_after = views[0]
            return LimitResult(False, exceeded, 0, reset_after)
        rate, remaining, reset_after = min(views, key=lambda v: (v[1], -v[2]))
        return LimitResult(True, rate, remaining, reset_after)

    async def _sliding_windows(self, script: SlidingWindowScript, spec: LimitSpec, identifier: str,
                               charge: bool) -> LimitResult:
        tag = _TAGS[spec.strategy]
        try:
            refused, states = await script.check(spec.rates, (tag, identifier), cost=spec.cost, charge=charge)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failed(spec.rates[0], exc)
        if refused is not None:
            return LimitResult(False, refused, 0, states[-1].reset_after)
        best = min(states, key=lambda st: (st.remaining, -st.reset_after))
        return LimitResult(True, best.rate, best.remaining, best.reset_after)

    def _record(self, result: LimitResult) -> LimitResult:
        if result.error is None:
            self.breaker.record_success()
        return result

    def _failed(self, first: RateLimitItem, exc: Exception) -> LimitResult:
        self.breaker.record_failure()
        reason = ERROR_TIMEOUT if isinstance(exc, TimeoutError) else f"{ERROR_UNAVAILABLE}: {type(exc).__name__}"
        return LimitResult(True, first, first.amount, 0.0, reason)

    async def warm_up(self, timeout: float = 2.0) -> bool:
        """Connect before the first request needs it (a Redis Cluster client discovers its slots
        first, which can take longer than the per-check ``timeout``). False when the store did
        not answer; requests then follow the fail modes as usual."""
        if self.is_memory:
            return True
        try:
            return bool(await asyncio.wait_for(self.storage.check(), timeout))
        except asyncio.CancelledError:
            raise
        except Exception:
            return False

    async def charge(self, spec: LimitSpec, identifier: str) -> bool:
        """Charge every rate after the fact (a counted response). False when the store failed."""
        if not self.breaker.allow():
            return False
        strategy, tag = self._strategies[spec.strategy], _TAGS[spec.strategy]
        try:
            if self._windows is not None and spec.strategy == "sliding-window":
                await self._windows.check(spec.rates, (tag, identifier), cost=spec.cost, charge=True)
            else:
                for rate in spec.rates:
                    await self._bounded(strategy.hit(rate, tag, identifier, cost=spec.cost))
        except asyncio.CancelledError:
            raise
        except Exception:
            self.breaker.record_failure()
            return False
        self.breaker.record_success()
        return True

    async def inspect(self, spec: LimitSpec, identifier: str) -> list[tuple[RateLimitItem, int, float]]:
        """(rate, remaining, seconds to reset) for each window of a key, without charging it."""
        strategy, tag = self._strategies[spec.strategy], _TAGS[spec.strategy]
        now = time.time()
        out = []
        for rate in spec.rates:
            stats = await self._bounded(strategy.get_window_stats(rate, tag, identifier))
            out.append((rate, max(0, int(stats.remaining)), max(0.0, stats.reset_time - now)))
        return out

    async def clear(self, spec: LimitSpec, identifier: str) -> None:
        """Forget one key's windows (deletes exactly those keys; never a KEYS scan or reset())."""
        strategy, tag = self._strategies[spec.strategy], _TAGS[spec.strategy]
        for rate in spec.rates:
            await self._bounded(strategy.clear(rate, tag, identifier))

    async def aclose(self) -> None:
        """Release connections (Redis) or the expiry task (memory). Safe to call twice."""
        timer = getattr(self.storage, "timer", None)
        if isinstance(timer, asyncio.Task) and not timer.done():
            timer.cancel()
        if self.pipe is not None:
            await self.pipe.aclose()
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        for resource in (client, self._pool):
            closer = getattr(resource, "aclose", None)
            if closer is None:
                continue
            try:
                await closer()
            except Exception:  # noqa: S110 - best effort on shutdown
                pass
