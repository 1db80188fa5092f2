"""Fixtures: a real CaptchaRuntime (low PoW costs) over memory and a real Redis, a frozen clock
that starts at the real time (the altcha library checks expiry against time.time() too)."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import altcha
import pytest

from captcha.keys import CaptchaKeys
from captcha.metrics import CaptchaMetrics
from captcha.runtime import CaptchaRuntime
from captcha.settings import CaptchaSettings, Escalation, Level, RouteCaptcha
from gateway.core.clock import FrozenClock
from gateway.core.context import Principal, RequestContext
from gateway.core.state import MemoryStore, RedisStore, StateStore

LEVELS = (Level(10, 20), Level(20, 30), Level(30, 40), Level(40, 50))
ESCALATE = Escalation(strikes=3, window=600.0, then="deny")


def redis_url() -> str | None:
    if os.environ.get("TSGATE_TEST_NO_REDIS"):
        return None
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def make_settings(**overrides: Any) -> CaptchaSettings:
    routes = {
        "guarded": RouteCaptcha(scope="guarded", trigger="always", level=1, uses=2, escalate=ESCALATE),
        "posts": RouteCaptcha(scope="writes", trigger="always", level=2, escalate=ESCALATE),
        "comments": RouteCaptcha(scope="writes", trigger="always", level=2, escalate=ESCALATE),
        "held": RouteCaptcha(scope="held", trigger="always", level=1,
                             escalate=Escalation(strikes=1, window=600.0, then="hold", queue="review")),
    }
    base: dict[str, Any] = dict(levels=LEVELS, default_level=1, challenge_ttl=60.0, clearance_ttl=300.0,
                                escalate=ESCALATE, routes=routes,
                                scopes=frozenset({"default", "internal", "guarded", "writes", "held", "limited"}))
    base.update(overrides)
    return CaptchaSettings(**base)


def new_keys() -> CaptchaKeys:
    return CaptchaKeys([(uuid.uuid4().hex[:8], secrets.token_bytes(32))])


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(wall=time.time())


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: FrozenClock) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    url = redis_url()
    if url is None:
        pytest.skip("Redis tests disabled by TSGATE_TEST_NO_REDIS")
    redis_store = RedisStore(url, prefix=f"tsgate-captcha-test-{uuid.uuid4().hex[:12]}:", timeout=1.0)
    if not await redis_store.ping():
        await redis_store.close()
        pytest.skip(f"Redis not reachable at {url}")
    try:
        yield redis_store
    finally:
        await redis_store.clear_prefix()
        await redis_store.close()


RuntimeFactory = Callable[..., CaptchaRuntime]


@pytest.fixture
def make_runtime(store: StateStore, clock: FrozenClock) -> RuntimeFactory:
    def factory(keys: CaptchaKeys | None = None, **overrides: Any) -> CaptchaRuntime:
        return CaptchaRuntime(make_settings(**overrides), keys or new_keys(), store, clock, metrics=CaptchaMetrics())

    return factory


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> CaptchaRuntime:
    return make_runtime()


def make_ctx(rule_id: str = "guarded", *, ip: str = "203.0.113.7", ua: bytes = b"browser/1",
             headers: list[tuple[bytes, bytes]] | None = None, principal: Principal | None = None,
             path: str = "/api/x") -> RequestContext:
    hdrs = [(b"user-agent", ua), *(headers or [])]
    return RequestContext(decision_id="d" + uuid.uuid4().hex[:8], method="GET", path=path, query=b"",
                          headers=hdrs, client_ip=ip, scheme="http", rule_id=rule_id, principal=principal)


def solve(challenge: dict[str, Any]) -> dict[str, Any]:
    """The widget's payload object for a challenge, solved by the reference solver."""
    parsed = altcha.Challenge.from_dict(challenge)
    solution = altcha.solve_challenge(parsed, timeout=20)
    assert solution is not None
    payload: dict[str, Any] = altcha.Payload(parsed, solution).to_dict()
    return payload
