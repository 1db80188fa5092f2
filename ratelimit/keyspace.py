"""Bounded occupancy for in-process (``memory://``) limit storage.

Counts live identifiers with their expiry. When ``capacity`` live identifiers exist, a NEW
identifier is refused; a live one is never evicted to make room, because eviction would hand a
blocked client a fresh budget (a flood of throwaway keys would then unlock the attacker's real
key). Identifiers already present keep being counted normally."""

from __future__ import annotations

import heapq

from gateway.core.clock import Clock, SystemClock

__all__ = ["KeySpace"]


class KeySpace:
    __slots__ = ("_clock", "_expiry", "_heap", "capacity")

    def __init__(self, capacity: int, *, clock: Clock | None = None) -> None:
        if capacity < 1:
            raise ValueError("max_memory_keys: must be >= 1")
        self.capacity = capacity
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, identifier), lazily pruned

    def __len__(self) -> int:
        return len(self._expiry)

    def admit(self, identifier: str, ttl: float) -> bool:
        """Record a use of ``identifier`` whose state lives ``ttl`` seconds; False when full."""
        now = self._clock.monotonic()
        self._prune(now)
        known = self._expiry.get(identifier)
        if known is None:
            if len(self._expiry) >= self.capacity:
                return False
            heapq.heappush(self._heap, (now + ttl, identifier))
        # exactly one heap entry per identifier; a stale one is re-queued when it surfaces
        self._expiry[identifier] = max(known or 0.0, now + ttl)
        return True

    def _prune(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, identifier = heapq.heappop(heap)
            current = self._expiry[identifier]
            if current <= now:
                del self._expiry[identifier]
            else:
                heapq.heappush(heap, (current, identifier))
