"""The follow-event log on memory://, a real Redis and a real Redis Cluster: order, bounds,
fail-soft writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from followers.errors import EventLogError
from followers.eventlog import EventLogConsumer, MemoryEventLog, RedisEventLog, event_log_from_url
from followers.events import FollowEvent
from tests.conftest import free_port
from tests.followers.conftest import REDIS_URL, T0, ev

LogFactory = Callable[[int], Any]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    created: list[Any] = []
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")

        def factory(max_len: int) -> Any:
            log = RedisEventLog(f"{REDIS_URL}?prefix={prefix}", max_len=max_len, timeout=1.0)
            created.append(log)
            return log
    else:
        def factory(max_len: int) -> Any:
            return MemoryEventLog(max_len)

    yield factory
    for log in created:
        await log.close()


async def test_events_read_back_in_order_after_a_position(make_log: LogFactory) -> None:
    """Appended events come back in order; reading after an id continues from there."""
    log = make_log(1000)
    events = [ev(T0 + i, f"a{i}", "t", created=T0 - 100) for i in range(25)]
    for event in events:
        assert await log.append(event)
    first = await log.read("0", 10)
    assert [e for _, e in first] == events[:10]
    rest = await log.read(first[-1][0], 100)
    assert [e for _, e in rest] == events[10:]


async def test_log_is_bounded(make_log: LogFactory) -> None:
    """The log keeps about max_len newest events (Redis trims approximately, in whole nodes)."""
    log = make_log(100)
    for i in range(2000):
        await log.append(ev(T0 + i, f"a{i}", "t"))
    kept = await log.read("0", 10_000)
    assert 100 <= len(kept) <= 400
    assert kept[-1][1].actor == "a1999"


async def test_consumer_feeds_every_event_once_in_order(make_log: LogFactory) -> None:
    """A consumer polls from where it stopped and never replays."""
    log = make_log(1000)
    seen: list[FollowEvent] = []

    async def handle(event: FollowEvent) -> None:
        seen.append(event)

    consumer = EventLogConsumer(log, handle)
    for i in range(5):
        await log.append(ev(T0 + i, f"a{i}", "t"))
    assert await consumer.poll() == 5
    await log.append(ev(T0 + 9, "late", "t"))
    assert await consumer.poll() == 1 and await consumer.poll() == 0
    assert [e.actor for e in seen] == ["a0", "a1", "a2", "a3", "a4", "late"]


async def test_unreachable_redis_never_fails_an_append() -> None:
    """A Redis that is down makes append return False and count the error — no exception —
    while a reader gets EventLogError."""
    log = RedisEventLog(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05)
    try:
        assert await log.append(ev(T0, "a", "t")) is False
        assert log.errors == 1
        with pytest.raises(EventLogError):
            await log.read()
    finally:
        await log.close()


def test_log_chosen_by_state_url() -> None:
    """memory:// gives the in-process ring, redis:// a stream whose key carries a hash tag."""
    assert isinstance(event_log_from_url("memory://"), MemoryEventLog)
    log = event_log_from_url("redis://127.0.0.1:6379/15?prefix=p:&timeout_ms=20")
    assert isinstance(log, RedisEventLog) and log.key == "p:followers:{events}"


@pytest.mark.redis
async def test_stream_on_a_real_redis_cluster(redis_cluster: str) -> None:
    """On Redis Cluster the stream is one hash-tagged key: appends and ordered reads work."""
    import uuid

    log = RedisEventLog(f"{redis_cluster}?prefix=ff-{uuid.uuid4().hex}:", max_len=1000, timeout=2.0)
    try:
        for i in range(20):
            assert await log.append(ev(T0 + i, f"a{i}", "t"))
        assert [e.actor for _, e in await log.read("0", 100)] == [f"a{i}" for i in range(20)]
    finally:
        await log.delete()
        await log.close()
