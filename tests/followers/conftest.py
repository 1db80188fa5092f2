"""Fixtures: contexts, events, and a real Redis (DB 15, own key prefix, own cleanup)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import redis

from followers.events import FollowEvent
from gateway.core.context import Principal, RequestContext

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DAY = 86400.0
T0 = 1_735_689_600.0


def redis_reachable() -> bool:
    if os.environ.get("TSGATE_TEST_NO_REDIS"):
        return False
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture
def redis_prefix() -> Any:
    """A unique key prefix on the test Redis; every key under it is deleted afterwards."""
    if not redis_reachable():
        pytest.skip(f"Redis not reachable at REDIS_URL={REDIS_URL}")
    prefix = f"tsgate-ff-test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def ev(ts: float, actor: str, target: str, *, action: str = "follow", prefix: str = "", ua: str = "",
       created: float | None = None, posts: int | None = None) -> FollowEvent:
    return FollowEvent(ts=ts, actor=actor, target=target, action="unfollow" if action == "unfollow" else "follow",
                       prefix=prefix or f"10.{hash(actor) % 250}.{hash(actor + 'x') % 250}.0/24", ua=ua,
                       actor_created=created, actor_posts=posts)


def make_ctx(*, actor: str | None = "alice", path_params: dict[str, str] | None = None, body: bytes | None = None,
             ip: str = "203.0.113.7", ua: bytes = b"Mozilla/5.0", claims: dict[str, Any] | None = None
             ) -> RequestContext:
    principal = None if actor is None else Principal(id=actor, kind="user", name=actor, claims=claims or {})
    return RequestContext(decision_id=uuid.uuid4().hex, method="POST", path="/api/profiles/x/follow", query=b"",
                          headers=[(b"user-agent", ua)], client_ip=ip, scheme="http", rule_id="follow",
                          path_params=path_params if path_params is not None else {"username": "bob"},
                          principal=principal, body=body)
