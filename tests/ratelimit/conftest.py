"""Fixtures: a Limiter factory parametrized over memory and a real Redis (own key prefix, own cleanup)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from gateway.core.context import Principal, RequestContext
from ratelimit.limiter import Limiter

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")

LimiterFactory = Callable[..., Limiter]


def redis_reachable() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    backend: str = request.param
    if backend == "redis" and not redis_reachable():
        pytest.skip(f"Redis not reachable at REDIS_URL={REDIS_URL}")
    prefix = f"tsgate-rl-test-{uuid.uuid4().hex}"
    created: list[Limiter] = []

    def factory(**kwargs: Any) -> Limiter:
        url = "memory://" if backend == "memory" else REDIS_URL
        limiter = Limiter(url, key_prefix=prefix, **kwargs)
        created.append(limiter)
        return limiter

    yield factory
    for limiter in created:
        await limiter.aclose()
    if backend == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def make_ctx(
    *,
    ip: str = "203.0.113.7",
    principal: Principal | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    path_params: dict[str, str] | None = None,
    rule_id: str = "rule-1",
    decision_id: str | None = None,
) -> RequestContext:
    return RequestContext(
        decision_id=decision_id or uuid.uuid4().hex,
        method="POST",
        path="/x",
        query=b"",
        headers=headers or [],
        client_ip=ip,
        scheme="https",
        rule_id=rule_id,
        path_params=path_params or {},
        principal=principal,
        body=body,
    )


def user(uid: str = "u1", roles: frozenset[str] = frozenset(), **claims: Any) -> Principal:
    return Principal(id=uid, kind="user", roles=roles, name=uid, claims=dict(claims))
