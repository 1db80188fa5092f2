"""The in-process state store (``memory://``): one event loop, no I/O, bounded memory.

Use it for a single worker, tests and demos. Several workers each get their own copy of the
state, so limits are per worker; use ``redis://`` to share state between workers."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import ConfigError, StoreError, StoreFullError

__all__ = ["MemoryStore"]

# Expired keys swept per write: enough to outpace one new key per call, small enough that no
# single call pays for a backlog.
_SWEEP_BATCH = 64
# The expiry heap keeps stale entries (keys re-set or deleted before they expired); rebuild it
# when it grows past this slack so it stays O(live keys) in size.
_HEAP_SLACK = 1024


class _Window:
    """A sliding window: members unique, kept sorted by (timestamp, member)."""

    __slots__ = ("entries", "members")

    def __init__(self) -> None:
        self.entries: list[tuple[float, str]] = []
        self.members: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, member: str, at: float) -> None:
        old = self.members.get(member)
        if old is not None:
            # Re-adding moves the member: remove its old position first (members are unique).
            del self.entries[bisect_right(self.entries, (old, member)) - 1]
        # Callers almost always pass increasing times, so this is nearly always an append.
        insort(self.entries, (at, member))
        self.members[member] = at

    def first_after(self, cutoff: float) -> int:
        """Index of the first entry with a timestamp strictly greater than ``cutoff``."""
        return bisect_right(self.entries, cutoff, key=lambda entry: entry[0])

    def trim(self, cutoff: float) -> None:
        """Drop entries at or before ``cutoff`` (they left the window)."""
        stop = self.first_after(cutoff)
        for _, member in self.entries[:stop]:
            del self.members[member]
        del self.entries[:stop]

    def count_after(self, cutoff: float) -> int:
        return len(self.entries) - self.first_after(cutoff)


@dataclass(slots=True)
class _Entry:
    value: int | bytes | _Window
    deadline: float | None  # clock.monotonic() at which the key disappears; None = never


def _expires_at(now: float, seconds: float, what: str = "ttl") -> float:
    # A non-positive or infinite duration is a caller bug, not a store failure (Redis refuses it too).
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return now + seconds


def _deadline(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else _expires_at(now, ttl)


def _as_int(value: int | bytes | _Window, key: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        # Like Redis, a value stored with `set` can be used as a counter if it is an integer.
        try:
            return int(value)
        except ValueError:
            raise StoreError(f"key {key!r} holds a value that is not an integer") from None
    raise StoreError(f"key {key!r} holds a window, not a counter")


def _positive_int(options: dict[str, str], name: str, default: int) -> int:
    raw = options.pop(name, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"memory:// option {name}={raw!r} must be a positive integer")
    return value


class MemoryStore:
    """A bounded, single-process ``StateStore``.

    URL: ``memory://`` with optional query ``max_keys=N`` and ``max_window_entries=N``; a value
    in the URL overrides the keyword argument of the same name.

    TTLs are measured with ``clock.monotonic()``. Expired keys are invisible at once and are
    removed lazily (when touched) and incrementally (a bounded sweep of an expiry heap on every
    write), so memory tracks the number of live keys without an O(n) scan per call.

    Bounded, and it never evicts: when ``max_keys`` keys exist and a call would create a new
    one, expired keys are dropped first; if all are still live the call raises
    ``StoreFullError``. Evicting a live key would silently reset someone's rate limit or replay
    record, handing a blocked client a fresh budget; the caller's guard decides instead (its
    ``on_error``). Likewise a window holding ``max_window_entries`` live entries refuses a new
    member with ``StoreFullError`` rather than dropping entries (which would under-count).

    Not thread-safe: every method runs without awaiting, so it is atomic within one event loop.
    """

    def __init__(self, url: str = "memory://", *, clock: Clock | None = None, max_keys: int = 1_000_000,
                 max_window_entries: int = 100_000) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "memory":
            raise ConfigError(f"MemoryStore needs a memory:// URL, got scheme {parts.scheme!r}")
        try:
            options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
        except ValueError as exc:
            raise ConfigError(f"memory:// URL has a malformed query {parts.query!r}") from exc
        self.max_keys = _positive_int(options, "max_keys", max_keys)
        self.max_window_entries = _positive_int(options, "max_window_entries", max_window_entries)
        if options:
            raise ConfigError(f"memory:// URL has unknown option(s) {sorted(options)}; "
                              "supported: max_keys, max_window_entries")
        self.url = url
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._data: dict[str, _Entry] = {}
        self._expiry: list[tuple[float, str]] = []  # min-heap of (deadline, key); may hold stale rows

    # -- internals -------------------------------------------------------------------------

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.deadline is not None and entry.deadline <= now:
            del self._data[key]  # lazy expiry; its heap row becomes stale and is skipped later
            return None
        return entry

    def _sweep(self, now: float, limit: int | None) -> None:
        """Pop due rows off the expiry heap (at most ``limit``) and delete keys really expired."""
        heap, data = self._expiry, self._data
        popped = 0
        while heap and heap[0][0] <= now and (limit is None or popped < limit):
            _, key = heapq.heappop(heap)
            popped += 1
            entry = data.get(key)
            # The row may be stale (key re-set with a later deadline): check the live entry.
            if entry is not None and entry.deadline is not None and entry.deadline <= now:
                del data[key]

    def _schedule(self, key: str, deadline: float) -> None:
        heapq.heappush(self._expiry, (deadline, key))
        if len(self._expiry) > 2 * len(self._data) + _HEAP_SLACK:
            # Amortised O(1): a rebuild costs O(keys) and happens only after that many pushes.
            self._expiry = [(e.deadline, k) for k, e in self._data.items() if e.deadline is not None]
            heapq.heapify(self._expiry)

    def _create(self, key: str, value: int | bytes | _Window, deadline: float | None, now: float) -> None:
        """Create ``key`` (known not to be live), refusing rather than evicting when full."""
        if len(self._data) >= self.max_keys:
            self._sweep(now, None)  # only expired keys may make room
            if len(self._data) >= self.max_keys:
                raise StoreFullError(f"memory store holds {self.max_keys} live keys; refusing to create "
                                     f"{key!r} (live keys are never evicted)")
        self._data[key] = _Entry(value, deadline)
        if deadline is not None:
            self._schedule(key, deadline)

    def _write_start(self) -> float:
        now = self._clock.monotonic()
        self._sweep(now, _SWEEP_BATCH)
        return now

    # -- StateStore ------------------------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        now = self._write_start()
        entry = self._live(key, now)
        if entry is None:
            self._create(key, amount, _deadline(now, ttl), now)
            return amount
        # An existing counter keeps its deadline: the TTL is set on creation only.
        value = _as_int(entry.value, key) + amount
        entry.value = value
        return value

    async def get_counter(self, key: str) -> int:
        entry = self._live(key, self._clock.monotonic())
        return 0 if entry is None else _as_int(entry.value, key)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        now = self._write_start()
        if self._live(key, now) is not None:
            return False
        self._create(key, bytes(value), _deadline(now, ttl), now)
        return True

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        now = self._write_start()
        deadline = _deadline(now, ttl)
        entry = self._live(key, now)
        if entry is None:
            self._create(key, bytes(value), deadline, now)
            return
        # Replacing an existing key needs no room; like Redis SET, it replaces the TTL too.
        entry.value = bytes(value)
        entry.deadline = deadline
        if deadline is not None:
            self._schedule(key, deadline)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key, self._clock.monotonic())
        if entry is None:
            return None
        if isinstance(entry.value, _Window):
            raise StoreError(f"key {key!r} holds a window, not a value")
        if isinstance(entry.value, int):
            return str(entry.value).encode()  # counters read back as Redis would return them
        return entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def delete(self, key: str) -> bool:
        if self._live(key, self._clock.monotonic()) is None:
            return False
        del self._data[key]
        return True

    async def window_add(self, key: str, member: str, at: float, window: float) -> int:
        now = self._write_start()
        # The whole window expires `window` seconds after its last add, as with Redis PEXPIRE.
        deadline = _expires_at(now, window, "window")
        cutoff = at - window
        entry = self._live(key, now)
        if entry is None:
            win = _Window()
            win.add(member, at)
            self._create(key, win, deadline, now)
            return 1
        if not isinstance(entry.value, _Window):
            raise StoreError(f"key {key!r} holds a counter or value, not a window")
        win = entry.value
        win.trim(cutoff)
        if member not in win.members and len(win) >= self.max_window_entries:
            raise StoreFullError(f"window {key!r} holds {self.max_window_entries} live entries; "
                                 "refusing to add (entries are never dropped early)")
        win.add(member, at)
        entry.deadline = deadline
        self._schedule(key, deadline)
        return len(win)

    async def window_count(self, key: str, at: float, window: float) -> int:
        entry = self._live(key, self._clock.monotonic())
        if entry is None:
            return 0
        if not isinstance(entry.value, _Window):
            raise StoreError(f"key {key!r} holds a counter or value, not a window")
        # Same range as RedisStore's ZCOUNT (at - window, +inf): entries stamped later than `at`
        # (another worker's clock running ahead) still count, which errs on the safe side.
        return entry.value.count_after(at - window)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        # Nothing to release but memory; drop it so a closed store does not pin it.
        self._data.clear()
        self._expiry.clear()
