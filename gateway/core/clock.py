"""Injectable time. Guards and stores read time only through a Clock so that TTLs and windows
are tested with a frozen clock instead of sleeps."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (used in tokens and logs)."""

    def monotonic(self) -> float:
        """Monotonic seconds (used for TTLs, windows and latency)."""


class SystemClock:
    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock that moves only when told to. `now` and `monotonic` advance together."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1_000.0) -> None:
        self._wall = wall
        self._mono = mono

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._mono += seconds
