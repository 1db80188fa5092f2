"""The one-round-trip sliding-window path on a real Redis (and a real Redis Cluster): same keys and
same answers as limits' own strategy, auto-pipelined, recovering from a flushed script cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.core.state import store_from_url, store_key
from gateway.core.state.redis import RedisStore
from ratelimit.limiter import Limiter
from ratelimit.spec import LimitSpec
from tests.ratelimit.conftest import REDIS_URL, redis_reachable

pytestmark = pytest.mark.redis


@pytest.fixture
async def limiter() -> AsyncIterator[Limiter]:
    if not redis_reachable():
        pytest.skip(f"Redis not reachable at REDIS_URL={REDIS_URL}")
    prefix = f"tsgate-rlw-{uuid.uuid4().hex}"
    made = Limiter(REDIS_URL, key_prefix=prefix, timeout=2.0)
    yield made
    await made.aclose()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def test_multi_rate_spec_is_one_round_trip_and_stops_at_the_refusing_rate(limiter: Limiter) -> None:
    spec = LimitSpec.build("burst", "3/minute; 5/hour", key=["ip"])
    assert limiter.pipe is not None
    before = limiter.pipe.round_trips
    results = [await limiter.check(spec, "k1") for _ in range(4)]
    assert limiter.pipe.round_trips - before == 4  # one per sequential check, both rates inside it
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[2].remaining == 0 and str(results[2].limit) == str(spec.rates[0])
    refused = results[3]
    assert refused.error is None and str(refused.limit) == str(spec.rates[0])
    assert 0 < refused.reset_after <= 60
    # limits' own reader (the operator's `limits inspect`) sees the same windows: the refused
    # request charged neither rate, so the hour has 5 - 3 left.
    windows = {str(rate): remaining for rate, remaining, _ in await limiter.inspect(spec, "k1")}
    assert windows == {str(spec.rates[0]): 0, str(spec.rates[1]): 2}


async def test_answers_match_limits_own_strategy_on_the_same_keys(limiter: Limiter) -> None:
    """Charge through the script, read through limits.aio's get_window_stats, and the reverse."""
    spec = LimitSpec.build("cmp", "10/minute", key=["ip"])
    for expected_remaining in (9, 8, 7):
        result = await limiter.check(spec, "k2")
        assert result.remaining == expected_remaining
        ((_, inspected, reset),) = await limiter.inspect(spec, "k2")
        assert inspected == expected_remaining and 0 < reset <= 60
    # limits charges the same keys: the script sees it.
    strategy = limiter._strategies["sliding-window"]
    assert await strategy.hit(spec.rates[0], "swc", "k2", cost=2)
    assert (await limiter.check(spec, "k2")).remaining == 4
    await limiter.clear(spec, "k2")
    assert (await limiter.check(spec, "k2")).remaining == 9


async def test_test_only_check_does_not_charge_and_cost_counts(limiter: Limiter) -> None:
    spec = LimitSpec.build("cost", "5/minute", key=["ip"], cost=2)
    for _ in range(3):
        assert (await limiter.check(spec, "k3", charge=False)).remaining == 5
    assert (await limiter.check(spec, "k3")).remaining == 3
    assert (await limiter.check(spec, "k3")).remaining == 1
    assert not (await limiter.check(spec, "k3")).allowed  # 1 left, costs 2


async def test_concurrent_checks_share_round_trips_and_stay_exact(limiter: Limiter) -> None:
    spec = LimitSpec.build("flood", "50/minute", key=["ip"])
    assert limiter.pipe is not None
    before_trips, before_commands = limiter.pipe.round_trips, limiter.pipe.commands
    results = await asyncio.gather(*(limiter.check(spec, "k4") for _ in range(300)))
    assert sum(r.allowed for r in results) == 50
    assert all(r.error is None for r in results)
    trips = limiter.pipe.round_trips - before_trips
    assert limiter.pipe.commands - before_commands == 300
    assert trips <= 10, f"300 concurrent checks took {trips} round trips"


async def test_recovers_when_the_server_forgets_its_scripts(limiter: Limiter) -> None:
    spec = LimitSpec.build("flush", "5/minute", key=["ip"])
    assert (await limiter.check(spec, "k5")).remaining == 4
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.script_flush()  # what a Redis restart or failover does to the script cache
    finally:
        client.close()
    result = await limiter.check(spec, "k5")
    assert result.error is None and result.remaining == 3


async def test_an_unreachable_redis_is_a_bounded_error_not_an_exception() -> None:
    dead = Limiter("redis://127.0.0.1:1/0", timeout=0.05, key_prefix="tsgate-dead")
    try:
        spec = LimitSpec.build("dead", "5/minute", key=["ip"])
        result = await asyncio.wait_for(dead.check(spec, "k"), 2)
        assert result.allowed and result.error is not None
    finally:
        await dead.aclose()


# -- Redis Cluster --------------------------------------------------------------------------------

async def test_limits_on_a_real_redis_cluster(redis_cluster: str) -> None:
    prefix = f"tsgate-rlc-{uuid.uuid4().hex}"
    limiter = Limiter(redis_cluster, key_prefix=prefix, timeout=2.0)
    try:
        spec = LimitSpec.build("c", "50/minute", key=["ip"])
        results = await asyncio.gather(*(limiter.check(spec, "ck") for _ in range(300)))
        assert sum(r.allowed for r in results) == 50 and all(r.error is None for r in results)
        multi = LimitSpec.build("cm", "2/minute; 3/hour", key=["ip"])
        answers = [await limiter.check(multi, f"user-{i}") for i in range(3) for _ in range(3)]
        assert [a.allowed for a in answers] == [True, True, False] * 3
        windows = {str(r): left for r, left, _ in await limiter.inspect(multi, "user-0")}
        assert windows == {str(multi.rates[0]): 0, str(multi.rates[1]): 1}
        await limiter.clear(multi, "user-0")
        assert (await limiter.check(multi, "user-0")).remaining == 1
    finally:
        await limiter.aclose()


async def test_state_store_on_a_real_redis_cluster(redis_cluster: str) -> None:
    store = store_from_url(f"{redis_cluster}/?prefix=tsgate-sc-{uuid.uuid4().hex}:")
    assert isinstance(store, RedisStore)
    try:
        assert await store.ping()
        keys = [store_key("t", "user:1", str(i)) for i in range(5)]  # one hash tag: one slot
        for i, key in enumerate(keys):
            await store.set(key, str(i).encode(), ttl=30)
        assert await store.get_many(keys) == [str(i).encode() for i in range(5)]
        assert await store.set_if_absent("replay:a", b"1", 30)
        assert not await store.set_if_absent("replay:a", b"1", 30)
        assert await store.incr("count:x", 2, ttl=30) == 2
        assert await store.incr("count:x", 3) == 5
        assert await store.window_add("win:z", "m1", 100.0, 10.0) == 1
        assert await store.window_add("win:z", "m2", 105.0, 10.0) == 2
        assert await store.window_count("win:z", 112.0, 10.0) == 1
        assert await store.delete("count:x")
        # commands to different slots (different nodes) issued together still all answer
        values = await asyncio.gather(*(store.incr(f"spread:{i}", 1, ttl=30) for i in range(50)))
        assert values == [1] * 50
    finally:
        await store.clear_prefix()
        await store.close()
