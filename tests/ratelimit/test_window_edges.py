"""Window edges with a frozen clock: `limits` reads time.time(), so the test owns time.time()."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ratelimit.limiter import Limiter
from ratelimit.spec import LimitSpec


class FrozenTime:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[FrozenTime]:
    clock = FrozenTime()
    monkeypatch.setattr(time, "time", clock)
    yield clock


async def allowed(limiter: Limiter, spec: LimitSpec, n: int) -> list[bool]:
    return [(await limiter.check(spec, "edge:k")).allowed for _ in range(n)]


async def test_fixed_window_resets_exactly_at_the_edge(frozen: FrozenTime) -> None:
    """A fixed window (it starts at the first hit) refuses the 6th request until it ends, then
    admits 5 again."""
    limiter = Limiter("memory://", timeout=1.0)
    spec = LimitSpec.build("edge", "5/minute", strategy="fixed-window")
    assert await allowed(limiter, spec, 6) == [True] * 5 + [False]
    frozen.now += 59.9
    assert await allowed(limiter, spec, 1) == [False]
    frozen.now += 0.2  # past the edge
    assert await allowed(limiter, spec, 6) == [True] * 5 + [False]
    await limiter.aclose()


async def test_moving_window_frees_one_slot_per_expired_hit(frozen: FrozenTime) -> None:
    """A moving window frees each slot exactly one window after that hit, not all at once."""
    limiter = Limiter("memory://", timeout=1.0)
    spec = LimitSpec.build("edge", "3/minute", strategy="moving-window")
    for _ in range(3):
        assert await allowed(limiter, spec, 1) == [True]
        frozen.now += 10
    assert await allowed(limiter, spec, 1) == [False]  # t=30: three hits at 0, 10, 20
    frozen.now = 1_800_000_000.0 + 60.5  # the hit at t=0 has left the window
    assert await allowed(limiter, spec, 2) == [True, False]
    frozen.now = 1_800_000_000.0 + 70.5  # and the one at t=10
    assert await allowed(limiter, spec, 2) == [True, False]
    await limiter.aclose()


async def test_retry_after_matches_the_frozen_reset(frozen: FrozenTime) -> None:
    """reset_after on a refusal is measured on the same clock as the window (never negative)."""
    limiter = Limiter("memory://", timeout=1.0)
    spec = LimitSpec.build("edge", "2/minute", strategy="fixed-window")
    await allowed(limiter, spec, 2)  # limits' fixed window starts at the first hit
    frozen.now += 15
    refused = await limiter.check(spec, "edge:k")
    assert not refused.allowed
    assert 44 <= refused.reset_after <= 46
    await limiter.aclose()
