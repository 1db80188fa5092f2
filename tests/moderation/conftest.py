"""Shared moderation fixtures: settings, request contexts, a fake review sink, a state-store
backend parametrized over memory:// (frozen clock) and redis:// (DB 15, a unique prefix per run,
cleaned afterwards; skipped with the reason when Redis is unreachable)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.core.clock import FrozenClock
from gateway.core.context import Principal, RequestContext
from gateway.core.services import GuardServices
from gateway.core.state import MemoryStore, RedisStore, StateStore
from moderation.config import ContentFields, ModerationSettings, Thresholds
from moderation.errors import ReviewQueueError
from moderation.model import LinearModel, load_default_model
from moderation.sinks import NewReviewItem

RUN_PREFIX = f"tsgate-modtest-{uuid.uuid4().hex}:"


def redis_url() -> str | None:
    if os.environ.get("TSGATE_TEST_NO_REDIS"):
        return None
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass
class FakeSink:
    """An in-memory ReviewSink; ``fail`` makes every enqueue raise like an unreachable database."""

    items: list[NewReviewItem] = field(default_factory=list)
    fail: bool = False

    async def enqueue(self, item: NewReviewItem) -> str:
        if self.fail:
            raise ReviewQueueError("review queue: database unreachable (test)")
        self.items.append(item)
        return f"item-{len(self.items)}"


@pytest.fixture(scope="session")
def model() -> LinearModel:
    return load_default_model()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: FrozenClock) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        memory = MemoryStore(clock=clock)
        yield memory
        await memory.close()
        return
    url = redis_url()
    if url is None:
        pytest.skip("Redis tests disabled by TSGATE_TEST_NO_REDIS")
    redis = RedisStore(url, prefix=RUN_PREFIX + uuid.uuid4().hex[:8] + ":", timeout=1.0)
    if not await redis.ping():
        await redis.close()
        pytest.skip(f"Redis not reachable at {redis.url} (set REDIS_URL, or TSGATE_TEST_NO_REDIS=1)")
    try:
        yield redis
    finally:
        await redis.clear_prefix()
        await redis.close()


def services(store: StateStore, clock: FrozenClock) -> GuardServices:
    return GuardServices(store, clock)


def make_settings(**overrides: Any) -> ModerationSettings:
    base: dict[str, Any] = {"content": ContentFields(("/comment/body",)),
                            "thresholds": Thresholds(flag=5, hold=10, block=15)}
    base.update(overrides)
    return ModerationSettings(**base)


_counter = iter(range(10**9))


def make_ctx(body: bytes | dict[str, Any] | None, *, user: str = "alice", content_type: str = "application/json",
             claims: dict[str, Any] | None = None, anonymous: bool = False) -> RequestContext:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    principal = None if anonymous else Principal(id=user, kind="user", name=user, claims=claims or {})
    return RequestContext(decision_id=f"dec-{next(_counter)}", method="POST", path="/api/articles/a/comments",
                          query=b"", headers=[(b"content-type", content_type.encode())], client_ip="192.0.2.10",
                          scheme="http", rule_id="comment", principal=principal, body=raw)


def comment(text: str) -> dict[str, Any]:
    return {"comment": {"body": text}}
