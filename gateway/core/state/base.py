"""The small state-store contract every guard uses. The algorithm lives in the guard; where its
state lives is chosen by URL (``memory://`` or ``redis://``), like limits' storage_from_string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["StateStore", "store_key"]


def store_key(namespace: str, entity: str, *rest: str) -> str:
    """Build a Redis Cluster-safe key: the entity is wrapped in a hash tag so that every key of
    one entity (e.g. all windows of one user) lands on one cluster slot.

    >>> store_key("rl", "user:42", "minute")
    'rl:{user:42}:minute'
    """
    safe_entity = entity.replace("{", "%7B").replace("}", "%7D")
    tail = ":".join(rest)
    return f"{namespace}:{{{safe_entity}}}" + (f":{tail}" if tail else "")


@runtime_checkable
class StateStore(Protocol):
    """Fast shared state: counters with TTL, set-if-absent with TTL, sliding windows.

    Every method may raise ``StoreError`` (never a foreign exception). Keys are given without the
    store's prefix; the store adds its own prefix (``?prefix=`` in the URL)."""

    url: str

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter and return the new value. ``ttl`` (seconds) is set when
        the counter is created and not extended by later increments."""

    async def get_counter(self, key: str) -> int:
        """The counter's value, 0 when absent or expired."""

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds unless a live value exists.
        True when this call created it (replay protection, idempotency)."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    async def get(self, key: str) -> bytes | None:
        """The value stored by ``set`` / ``set_if_absent``, or None."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Several values in one round trip (None for absent ones). On Redis Cluster the keys
        must share a hash tag: build them with one entity in ``store_key``."""

    async def delete(self, key: str) -> bool:
        """Remove a key of any kind. True when something was removed."""

    async def window_add(self, key: str, member: str, at: float, window: float) -> int:
        """Record ``member`` at time ``at`` in a sliding window of ``window`` seconds, drop
        entries older than ``at - window``, and return how many entries remain (this one
        included). Re-adding the same member moves it to ``at``."""

    async def window_count(self, key: str, at: float, window: float) -> int:
        """How many entries are newer than ``at - window`` (entries stamped after ``at`` by another
        worker's clock count too) without adding one."""

    async def ping(self) -> bool:
        """True when the store answers (used by /readyz)."""

    async def close(self) -> None:
        """Release connections."""
