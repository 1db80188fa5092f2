"""One Redis round trip per sliding-window check: charge every rate of a spec *and* read back the
window state the RateLimit headers need, in one Lua script.

Through ``limits.aio`` a check is a Lua ``hit`` per rate, then a ``get_window_stats`` per rate:
two round trips or more. This script runs the same algorithm on the same keys (limits'
``acquire_sliding_window.lua`` followed by ``sliding_window.lua``; its layout
``<prefix>:{<item key>}`` and ``<prefix>:{<item key>}/-1``), so ``limits`` still reads, inspects
and clears these windows, and the memory backend and this one agree (tests compare them).

On Redis Cluster every rate has its own hash tag (limits' key layout), so a multi-rate spec is
one script call per rate there, in order; elsewhere all rates go in one call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem

from gateway.core.state.autopipe import AutoPipeline

__all__ = ["SLIDING_WINDOWS_LUA", "SlidingWindowScript", "WindowState"]

# KEYS: per rate, the previous then the current window key.
# ARGV[1] cost; ARGV[2] "1" to charge, "0" to only test; then per rate: limit, expiry (seconds).
# Returns {index of the refusing rate or 0, then per rate examined: previous count, previous
# ttl ms, current count, current ttl ms} with the state *after* this call's charge. Rates are
# charged in order and the first refusal stops (the refused rate is not charged).
SLIDING_WINDOWS_LUA = """
local cost = tonumber(ARGV[1])
local charge = ARGV[2] == '1'
local out = {0}
for i = 1, #KEYS / 2 do
  local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i]) * 1000
  local current_ttl = tonumber(redis.call('pttl', current))
  if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', current, previous)
    redis.call('set', current, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('get', previous)) or 0
  local previous_ttl = math.max(0, tonumber(redis.call('pttl', previous)))
  local current_count = tonumber(redis.call('get', current)) or 0
  current_ttl = math.max(0, tonumber(redis.call('pttl', current)))
  local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
  local refused = cost > limit or weighted + cost > limit
  if charge and not refused then
    if redis.call('exists', current) == 1 then
      current_count = redis.call('incrby', current, cost)
    else
      redis.call('set', current, cost, 'PX', expiry * 2)
      current_count = cost
      current_ttl = expiry * 2
    end
  end
  out[#out + 1] = previous_count
  out[#out + 1] = previous_ttl
  out[#out + 1] = current_count
  out[#out + 1] = current_ttl
  if refused then
    out[1] = i
    return out
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class WindowState:
    """One rate's window after a check: what ``limits``' ``get_window_stats`` would report."""

    rate: RateLimitItem
    remaining: int
    reset_after: float


def _state(rate: RateLimitItem, previous: int, previous_ttl_ms: int, current: int, current_ttl_ms: int
           ) -> WindowState:
    # limits.aio.strategies.SlidingWindowCounterRateLimiter.get_window_stats, from the same numbers.
    expiry = rate.get_expiry()
    previous_ttl, current_ttl = previous_ttl_ms / 1000, current_ttl_ms / 1000
    remaining = max(0, rate.amount - math.floor(previous * previous_ttl / expiry + current))
    if not (previous or current):
        return WindowState(rate, remaining, 0.0)
    previous_reset = previous_ttl % (expiry / previous) if previous else math.inf
    # A window created this very millisecond has ttl == 2 * expiry, and "% expiry" would say it
    # resets now; it resets in a full window.
    current_reset = (current_ttl % expiry or expiry) if current else math.inf
    return WindowState(rate, remaining, min(previous_reset, current_reset))


class SlidingWindowScript:
    """Sliding-window-counter checks over an ``AutoPipeline``: one EVALSHA per check (per rate on
    a cluster), batched with whatever else the process sends in the same loop turn."""

    def __init__(self, pipe: AutoPipeline, key_prefix: str, *, cluster: bool) -> None:
        self.pipe = pipe
        self.key_prefix = key_prefix
        self.cluster = cluster

    def keys(self, rate: RateLimitItem, *identifiers: str) -> tuple[str, str]:
        """(previous, current) window keys, exactly as limits' Redis storage names them."""
        current = f"{self.key_prefix}:{{{rate.key_for(*identifiers)}}}"
        return current + "/-1", current

    async def _call(self, rates: Sequence[RateLimitItem], identifiers: tuple[str, ...], cost: int,
                    charge: bool) -> tuple[int, list[WindowState]]:
        keys: list[str] = []
        args: list[str | int] = [cost, 1 if charge else 0]
        for rate in rates:
            keys.extend(self.keys(rate, *identifiers))
            args.extend((rate.amount, rate.get_expiry()))
        reply = await self.pipe.run_script(SLIDING_WINDOWS_LUA, keys, args)
        refused = int(reply[0])
        numbers = [int(v) for v in reply[1:]]
        states = [_state(rate, *numbers[4 * i:4 * i + 4]) for i, rate in enumerate(rates[:len(numbers) // 4])]
        return refused, states

    async def check(self, rates: Sequence[RateLimitItem], identifiers: tuple[str, ...], *, cost: int,
                    charge: bool) -> tuple[RateLimitItem | None, list[WindowState]]:
        """Charge (or test) ``rates`` in order. Returns (the refusing rate or None, the state of
        every rate examined: all of them when allowed, up to the refusing one otherwise)."""
        if not self.cluster or len(rates) == 1:
            refused, states = await self._call(rates, identifiers, cost, charge)
            return (rates[refused - 1] if refused else None), states
        examined: list[WindowState] = []
        for rate in rates:
            refused, states = await self._call((rate,), identifiers, cost, charge)
            examined.extend(states)
            if refused:
                return rate, examined
        return None, examined

