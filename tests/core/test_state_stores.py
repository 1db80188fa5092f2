"""One contract suite run against every StateStore backend, plus backend-specific bounds.

Memory runs on a FrozenClock (time moves when the test says). Redis runs on a real server with
a unique key prefix per run, and real short TTLs; it is skipped when Redis is unreachable."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import redis.exceptions

from gateway.core.clock import FrozenClock
from gateway.core.errors import ConfigError, StoreError, StoreFullError, StoreUnavailableError
from gateway.core.state import MemoryStore, RedisStore, StateStore, store_from_url, store_key

RUN_PREFIX = f"tsgate-test-{uuid.uuid4().hex}:"


def _redis_url() -> str | None:
    # Same switches as tests/conftest.py: TSGATE_TEST_NO_REDIS turns Redis tests off.
    if os.environ.get("TSGATE_TEST_NO_REDIS"):
        return None
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


@asynccontextmanager
async def open_redis_store() -> AsyncIterator[RedisStore]:
    """A RedisStore under this run's prefix, cleaned afterwards; skips the test without Redis."""
    url = _redis_url()
    if url is None:
        pytest.skip("Redis tests disabled by TSGATE_TEST_NO_REDIS")
    # A generous timeout: these tests check behaviour, not latency, and CI machines stall.
    store = RedisStore(url, prefix=RUN_PREFIX, timeout=1.0)
    if store.prefix != RUN_PREFIX:
        await store.close()
        pytest.fail(f"REDIS_URL must not carry ?prefix=: tests clear their own prefix ({store.url})")
    if not await store.ping():
        await store.close()
        pytest.skip(f"Redis not reachable at {store.url} (set REDIS_URL, or TSGATE_TEST_NO_REDIS=1)")
    try:
        yield store
    finally:
        await store.clear_prefix()
        await store.close()


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    async with open_redis_store() as store:
        yield store


@dataclass
class Backend:
    """A store plus a way to let time pass that suits it."""

    store: StateStore
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FrozenClock()

        async def tick(seconds: float) -> None:
            clock.advance(seconds)

        store = MemoryStore(clock=clock)
        yield Backend(store, tick)
        await store.close()
    else:
        # Redis keeps TTLs on the server clock, so time can only pass for real.
        async with open_redis_store() as redis_store:
            yield Backend(redis_store, asyncio.sleep)


# -- the contract, on every backend ----------------------------------------------------------


async def test_incr_and_get_counter(backend: Backend) -> None:
    """incr adds and returns the new value; get_counter reads it, 0 when absent."""
    store = backend.store
    assert await store.get_counter("c") == 0
    assert await store.incr("c") == 1
    assert await store.incr("c", 4) == 5
    assert await store.get_counter("c") == 5
    assert await store.get_counter("other") == 0


async def test_incr_ttl_set_on_creation_not_extended(backend: Backend) -> None:
    """The TTL starts when the counter is created; later increments do not push it back."""
    store = backend.store
    assert await store.incr("t", ttl=0.5) == 1
    await backend.advance(0.3)
    assert await store.incr("t", ttl=0.5) == 2  # had the TTL been reset, it would live to 0.8 s
    await backend.advance(0.3)
    assert await store.get_counter("t") == 0
    assert await store.incr("t", ttl=0.5) == 1  # a fresh counter after expiry


async def test_set_if_absent_then_again_after_expiry(backend: Backend) -> None:
    """set_if_absent is True once, False while the value lives, True again after it expires."""
    store = backend.store
    assert await store.set_if_absent("nonce", b"1", ttl=0.2) is True
    assert await store.set_if_absent("nonce", b"2", ttl=0.2) is False
    assert await store.get("nonce") == b"1"
    await backend.advance(0.3)
    assert await store.get("nonce") is None
    assert await store.set_if_absent("nonce", b"3", ttl=0.2) is True


async def test_get_set_delete(backend: Backend) -> None:
    """set replaces, get reads (None when absent or expired), delete reports what it removed."""
    store = backend.store
    assert await store.get("k") is None
    await store.set("k", b"one")
    await store.set("k", b"two")
    assert await store.get("k") == b"two"
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert await store.get("k") is None
    await store.set("short", b"x", ttl=0.2)
    await backend.advance(0.3)
    assert await store.get("short") is None


async def test_get_many_one_round_trip(backend: Backend) -> None:
    """get_many returns values in key order, None for absent keys (one MGET on Redis)."""
    store = backend.store
    a, b = store_key("rev", "sid1", "sid"), store_key("rev", "sid1", "jti", "j1")
    assert await store.get_many([a, b]) == [None, None]
    await store.set(b, b"1", ttl=5)
    assert await store.get_many([a, b]) == [None, b"1"]
    assert await store.get_many([]) == []


async def test_window_add_counts_and_drops_old_entries(backend: Backend) -> None:
    """window_add returns entries in (at - window, ...] and forgets older ones."""
    store = backend.store
    assert await store.window_add("w", "a", at=100.0, window=10.0) == 1
    assert await store.window_add("w", "b", at=105.0, window=10.0) == 2
    assert await store.window_add("w", "c", at=110.0, window=10.0) == 2  # "a" (at 100) is exactly 10 s old
    assert await store.window_add("w", "d", at=116.0, window=10.0) == 2  # "b" left too


async def test_window_readd_same_member_moves_it(backend: Backend) -> None:
    """Re-adding a member moves it to the new time instead of counting it twice."""
    store = backend.store
    assert await store.window_add("w", "a", at=100.0, window=10.0) == 1
    assert await store.window_add("w", "a", at=105.0, window=10.0) == 1
    assert await store.window_count("w", at=112.0, window=10.0) == 1  # counted from 105, not 100


async def test_window_count_reads_without_adding(backend: Backend) -> None:
    """window_count counts entries newer than at - window and adds nothing."""
    store = backend.store
    assert await store.window_count("w", at=100.0, window=10.0) == 0
    await store.window_add("w", "a", at=100.0, window=10.0)
    await store.window_add("w", "b", at=104.0, window=10.0)
    assert await store.window_count("w", at=104.0, window=10.0) == 2
    assert await store.window_count("w", at=104.0, window=10.0) == 2
    assert await store.window_count("w", at=110.0, window=10.0) == 1  # "a" is exactly 10 s old
    assert await store.window_count("w", at=120.0, window=10.0) == 0


async def test_wrong_kind_raises_store_error(backend: Backend) -> None:
    """Using a window as a value (or a value as a counter) raises StoreError, nothing foreign."""
    store = backend.store
    await store.window_add("w", "a", at=1.0, window=10.0)
    with pytest.raises(StoreError):
        await store.get("w")
    await store.set("v", b"not a number")
    with pytest.raises(StoreError):
        await store.incr("v")
    await store.set("n", b"41")
    assert await store.incr("n") == 42  # an integer value works as a counter, as in Redis
    assert await store.get("n") == b"42"


async def test_ping(backend: Backend) -> None:
    """ping answers True when the store is reachable."""
    assert await backend.store.ping() is True


async def test_concurrent_incr_is_exact(backend: Backend) -> None:
    """200 concurrent increments give exactly 200 and each caller a distinct value."""
    store = backend.store
    results = await asyncio.gather(*(store.incr("hot", ttl=60) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await store.get_counter("hot") == 200


async def test_non_positive_ttl_is_a_caller_bug(backend: Backend) -> None:
    """A ttl or window of zero or less raises ValueError on every backend."""
    with pytest.raises(ValueError, match="ttl"):
        await backend.store.set_if_absent("k", b"v", ttl=0)
    with pytest.raises(ValueError, match="window"):
        await backend.store.window_add("w", "a", at=1.0, window=-1)


# -- keys and URLs ---------------------------------------------------------------------------


def test_store_key_hash_tag_shape() -> None:
    """store_key wraps the entity in one Redis Cluster hash tag and escapes braces inside it."""
    assert store_key("rl", "user:42", "minute") == "rl:{user:42}:minute"
    assert store_key("replay", "jti-1") == "replay:{jti-1}"
    assert store_key("rl", "a{b}c", "x", "y") == "rl:{a%7Bb%7Dc}:x:y"


def test_store_from_url_refuses_unknown_scheme() -> None:
    """An unsupported scheme is a ConfigError naming it and the supported ones."""
    with pytest.raises(ConfigError, match=r"'foo'.*memory://.*redis://"):
        store_from_url("foo://localhost")


async def test_store_from_url_picks_backend() -> None:
    """memory:// gives a MemoryStore, redis:// a RedisStore, both honouring URL options."""
    memory = store_from_url("memory://?max_keys=7")
    assert isinstance(memory, MemoryStore) and memory.max_keys == 7
    assert isinstance(memory, StateStore)
    remote = store_from_url("redis://:secret@127.0.0.1:6379/3?prefix=app:&timeout_ms=20")
    assert isinstance(remote, RedisStore)
    assert (remote.prefix, remote.timeout) == ("app:", 0.02)
    assert "secret" not in remote.url  # the URL is safe to log
    await remote.close()


@pytest.mark.parametrize("url", [
    "memory://?bogus=1", "memory://?max_keys=0", "redis://localhost?bogus=1", "redis://localhost?prefix=",
    "redis://localhost?prefix={x}:", "redis://localhost?timeout_ms=-5", "redis://localhost?ssl_ca_certs=/x",
])
def test_bad_url_options_are_config_errors(url: str) -> None:
    """Unknown or invalid URL options fail at construction with ConfigError."""
    with pytest.raises(ConfigError):
        store_from_url(url)


# -- memory only -----------------------------------------------------------------------------


async def test_memory_full_raises_and_never_evicts() -> None:
    """A full MemoryStore refuses new keys with StoreFullError and keeps every live key."""
    store = MemoryStore(clock=FrozenClock(), max_keys=3)
    for key in ("a", "b", "c"):
        await store.incr(key)
    with pytest.raises(StoreFullError):
        await store.incr("d")
    with pytest.raises(StoreFullError):
        await store.set_if_absent("d", b"x", ttl=1)
    with pytest.raises(StoreFullError):
        await store.window_add("d", "m", at=1.0, window=1.0)
    assert await store.incr("a") == 2  # existing keys still update
    assert [await store.get_counter(k) for k in ("a", "b", "c", "d")] == [2, 1, 1, 0]


async def test_memory_expired_keys_make_room() -> None:
    """When full, expired keys are dropped to make room for a new one."""
    clock = FrozenClock()
    store = MemoryStore(clock=clock, max_keys=2)
    await store.incr("a", ttl=1)
    await store.incr("b")
    clock.advance(2)
    assert await store.incr("c") == 1
    assert await store.get_counter("b") == 1


async def test_memory_bounded_under_churn() -> None:
    """200k distinct short-TTL keys over advancing time leave only about the live ones in memory."""
    clock = FrozenClock()
    store = MemoryStore(clock=clock)
    for i in range(200_000):
        await store.incr(f"k{i}", ttl=1.0)
        clock.advance(0.001)  # about 1000 keys are live at any moment
    assert len(store._data) <= 1_100
    assert len(store._expiry) <= 2 * 1_100 + 1024


async def test_memory_window_entries_bounded() -> None:
    """A full window refuses a new member with StoreFullError but still moves existing ones."""
    store = MemoryStore(clock=FrozenClock(), max_window_entries=3)
    for i, member in enumerate("abc"):
        await store.window_add("w", member, at=float(i), window=10.0)
    with pytest.raises(StoreFullError):
        await store.window_add("w", "d", at=3.0, window=10.0)
    assert await store.window_add("w", "a", at=4.0, window=10.0) == 3
    assert await store.window_add("w", "d", at=11.5, window=10.0) == 3  # "b" (at 1) aged out


async def test_memory_url_options() -> None:
    """memory:// query options override keyword defaults."""
    store = MemoryStore("memory://?max_keys=5&max_window_entries=9", max_keys=100)
    assert (store.max_keys, store.max_window_entries) == (5, 9)


# -- redis only ------------------------------------------------------------------------------


async def test_redis_unreachable_raises_store_unavailable() -> None:
    """A closed port fails fast with StoreUnavailableError (cause kept), never a redis exception."""
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            await store.incr("x", ttl=1)
        assert time.monotonic() - started < 0.5
        assert not isinstance(caught.value, redis.exceptions.RedisError)
        assert caught.value.__cause__ is not None
        assert await store.ping() is False
    finally:
        await store.close()


async def test_redis_silent_server_times_out_as_store_unavailable() -> None:
    """A server that accepts but never answers costs about one timeout, then StoreUnavailableError."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # swallow everything until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?timeout_ms=50")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.get("x")
        assert time.monotonic() - started < 0.5
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


@pytest.mark.redis
async def test_redis_keys_are_prefixed_and_cleared(redis_store: RedisStore) -> None:
    """Keys live under the store's prefix, and clear_prefix removes only those."""
    other = RedisStore(_redis_url() or "", prefix=f"tsgate-test-other-{uuid.uuid4().hex}:", timeout=1.0)
    try:
        await other.set("keep", b"1")
        await redis_store.set(store_key("rl", "user:1", "min"), b"x")
        await redis_store.window_add("w", "a", at=1.0, window=60.0)
        assert await redis_store.clear_prefix() == 2
        assert await redis_store.get(store_key("rl", "user:1", "min")) is None
        assert await other.get("keep") == b"1"
    finally:
        await other.clear_prefix()
        await other.close()


@pytest.mark.redis
async def test_redis_window_ttl_follows_window(redis_store: RedisStore) -> None:
    """A window key expires `window` seconds after its last add, so idle windows free memory."""
    await redis_store.window_add("w", "a", at=1.0, window=0.2)
    await asyncio.sleep(0.3)
    assert await redis_store.window_count("w", at=1.0, window=0.2) == 0
