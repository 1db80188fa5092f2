"""Bounded, time-bucketed building blocks for detector state that lives inside the gateway.

Every map here has a hard cap and evicts the least recently used key: follow traffic is
attacker-driven, and detector memory must not grow with the number of distinct accounts,
targets, networks or User-Agents an attacker can mint. Evicting detector state only forgets
evidence (a later event starts from the prior); it never resets a limit or unblocks anyone —
labels live in the StateStore, not here."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU", "SlidingCount"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A capped map; ``get_or_create`` touches the key, the oldest key is evicted past ``cap``."""

    __slots__ = ("_data", "cap", "evictions")

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self._data: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        data = self._data
        value = data.get(key)
        if value is None:
            value = factory()
            data[key] = value
            if len(data) > self.cap:
                data.popitem(last=False)
                self.evictions += 1
        else:
            data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.cap:
            data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data.items()))


class SlidingCount:
    """Distinct members per key over the last ``bucket`` seconds, with a per-bucket-learned baseline.

    Two buckets (current and previous) estimate the trailing-window count the way sliding-window
    rate limiters do: ``current + previous * (1 - elapsed fraction)``. When a bucket closes, its
    count is folded into an exponentially weighted baseline (``alpha`` per bucket), so each key
    is compared against its *own* history: a carrier-grade NAT prefix that always carries many
    accounts is not news; a fresh proxy subnet suddenly carrying fifty is. Members per bucket are
    capped (``member_cap``): the count saturates instead of growing.

    The baseline update has bounded influence: a closed bucket counts for at most twice the
    baseline it is compared against (``2 * max(baseline, floor)``), so a surge cannot teach the
    key that surges are normal — a panel's proxy subnet stays surprising when the panel comes back
    for its next order an hour later — while organic growth still moves the baseline (it can double
    every bucket)."""

    __slots__ = ("baseline", "bucket_index", "buckets_seen", "current", "previous")

    def __init__(self, bucket_index: int) -> None:
        self.bucket_index = bucket_index
        self.current: set[str] = set()
        self.previous = 0
        self.baseline = 0.0
        self.buckets_seen = 0

    def add(self, member: str, bucket_index: int, alpha: float, member_cap: int, floor: float = 0.0) -> None:
        if bucket_index != self.bucket_index:
            self._roll(bucket_index, alpha, floor)
        if len(self.current) < member_cap:
            self.current.add(member)

    def _roll(self, bucket_index: int, alpha: float, floor: float) -> None:
        gap = bucket_index - self.bucket_index
        if gap <= 0:  # an out-of-order event from an earlier bucket: count it in the current one
            return
        closed = len(self.current)
        folded = min(closed, 2.0 * max(self.baseline, floor)) if floor > 0 else closed
        # A running mean until 1/alpha buckets were seen, then an EWMA (bias-corrected start: the
        # first buckets are not pulled towards an arbitrary initial value).
        self.buckets_seen += 1
        self.baseline += max(alpha, 1.0 / self.buckets_seen) * (folded - self.baseline)
        for _ in range(min(gap - 1, 64)):  # empty buckets in between (64: the baseline is ~gone by then)
            self.buckets_seen += 1
            self.baseline -= max(alpha, 1.0 / self.buckets_seen) * self.baseline
        self.previous = closed if gap == 1 else 0
        self.current = set()
        self.bucket_index = bucket_index

    def trailing(self, fraction: float) -> float:
        """Distinct members in the trailing bucket-length window (estimate)."""
        return len(self.current) + self.previous * (1.0 - fraction)
