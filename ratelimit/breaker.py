"""A circuit breaker in front of the limit store: stop calling a dead Redis, retry it later.

closed → (``threshold`` consecutive failures) → open for ``cooldown`` seconds, during which every
call fails at once without touching the store → half-open: exactly one trial call goes through;
its success closes the breaker, its failure opens it for another cooldown."""

from __future__ import annotations

from typing import Literal

from gateway.core.clock import Clock, SystemClock

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_trial_in_flight", "cooldown", "threshold")

    def __init__(self, *, threshold: int = 3, cooldown: float = 5.0, clock: Clock | None = None) -> None:
        if threshold < 1:
            raise ValueError("threshold: must be >= 1")
        if cooldown < 0:
            raise ValueError("cooldown: must be >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock.monotonic() - self._opened_at < self.cooldown:
            return "open"
        return "half-open"

    def allow(self) -> bool:
        """May a call go to the store now? In half-open, only the first caller is let through."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._trial_in_flight = False
        if self._opened_at is not None:  # the half-open trial failed: back off again
            self._opened_at = self._clock.monotonic()
            return
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self._clock.monotonic()
