"""Rate limits end to end: a `tsgate run` process in front of the demo backend, limits counted
in the real state store (memory or Redis), draft-ietf-httpapi-ratelimit-headers-10 headers."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Backend, GatewayProc, free_port, policy_text, redis_url, request, wait_port

LIMITS = """
routes:
  - id: limited
    match: {path: "/api/debug/echo/limited/**"}
    limits:
      - {name: echo-ip, rate: "5/minute", key: ip}
  - id: burst
    match: {path: "/api/debug/echo/burst/**"}
    limits:
      - {name: burst, rate: "20/minute", key: route}
  - id: shadowed
    match: {path: "/api/debug/echo/shadowed/**"}
    limits:
      - {name: shadow-limit, rate: "1/minute", key: ip, on_exceed: shadow}
  - id: by-target
    match: {methods: [POST], path: "/api/debug/echo/follow/{username}"}
    limits:
      - {name: fan-in, rate: "3/hour", key: "path:username"}
  - id: any
    match: {path: "/**"}
"""


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    return start_gateway(policy_text(backend.port, LIMITS))


def test_limit_denies_with_ietf_headers(gw: GatewayProc) -> None:
    """Five requests pass with RateLimit headers; the sixth is a 429 problem with Retry-After."""
    statuses = []
    last_ok = None
    for _ in range(5):
        resp = gw.get("/api/debug/echo/limited/x")
        statuses.append(resp.status)
        last_ok = resp
    assert statuses == [200] * 5 and last_ok is not None
    assert re.fullmatch(r'"echo-ip";q=5;w=60', last_ok.headers["ratelimit-policy"])
    assert re.fullmatch(r'"echo-ip";r=0;t=\d+', last_ok.headers["ratelimit"])
    refused = gw.get("/api/debug/echo/limited/x")
    assert refused.status == 429
    body = refused.json()
    assert body["reason"] == "ratelimit.exceeded" and "echo-ip" in body["detail"]
    retry_after = int(refused.headers["retry-after"])
    reset = int(refused.headers["ratelimit"].split("t=")[1])
    assert 1 <= retry_after and retry_after >= reset


def test_concurrent_requests_are_counted_exactly(gw: GatewayProc) -> None:
    """60 concurrent requests against 20/minute: exactly 20 reach the backend."""
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = gw.get("/api/debug/echo/burst/x").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 20 and statuses.count(429) == 40


def test_shadow_limit_never_blocks(gw: GatewayProc) -> None:
    """A shadow limit records that it would have refused, and lets everything through."""
    assert [gw.get("/api/debug/echo/shadowed/x").status for _ in range(4)] == [200] * 4


def test_path_parameter_key_limits_fan_in(gw: GatewayProc) -> None:
    """A limit keyed by the follow target counts per target, not per client."""
    post = lambda name: request(gw.port, "POST", f"/api/debug/echo/follow/{name}", body=b"")  # noqa: E731
    assert [post("popular").status for _ in range(4)] == [200, 200, 200, 429]
    assert post("POPULAR").status == 429  # the key is case-folded like the path
    assert post("someone-else").status == 200


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_two_gateways_share_one_limit(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """Two gateway processes on one Redis enforce a single global limit."""
    state = f"{redis_url()}?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    text = policy_text(backend.port, LIMITS, state=state)
    one, two = start_gateway(text), start_gateway(text)
    statuses = [gw.get("/api/debug/echo/limited/x").status for _ in range(4) for gw in (one, two)]
    assert statuses.count(200) == 5 and statuses.count(429) == 3


def test_two_gateways_share_one_limit_on_a_redis_cluster(backend: Backend, redis_cluster: str,
                                                         start_gateway: Callable[..., GatewayProc]) -> None:
    """The same over `state: redis+cluster://...` (a real 3-node cluster): limits and the headers."""
    state = f"{redis_cluster}/?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    text = policy_text(backend.port, LIMITS, state=state)
    one, two = start_gateway(text), start_gateway(text)
    answers = [gw.get("/api/debug/echo/limited/x") for _ in range(4) for gw in (one, two)]
    statuses = [a.status for a in answers]
    assert statuses.count(200) == 5 and statuses.count(429) == 3
    assert answers[0].headers.get("ratelimit") == '"echo-ip";r=4;t=60'


FAIL_MODES = """
routes:
  - id: open
    match: {path: "/api/debug/echo/open/**"}
    limits: [{name: open-limit, rate: "1/minute", key: ip, fail: open}]
  - id: closed
    match: {path: "/api/debug/echo/closed/**"}
    limits: [{name: closed-limit, rate: "1/minute", key: ip, fail: closed}]
  - id: any
    match: {path: "/**"}
"""


def test_store_down_follows_each_limits_fail_mode(backend: Backend,
                                                  start_gateway: Callable[..., GatewayProc]) -> None:
    """With the state store unreachable, a fail-open limit lets requests through and a fail-closed
    one answers 503 — quickly, and never 500."""
    gw = start_gateway(policy_text(backend.port, "ratelimit: {timeout: 50ms, breaker_cooldown: 1s}\n" + FAIL_MODES,
                                   state=f"redis://127.0.0.1:{free_port()}/0"))
    started = time.monotonic()
    opened = [gw.get("/api/debug/echo/open/x").status for _ in range(3)]
    closed = [gw.get("/api/debug/echo/closed/x") for _ in range(3)]
    assert opened == [200, 200, 200]
    assert [c.status for c in closed] == [503, 503, 503]
    assert closed[0].json()["reason"] == "ratelimit.unavailable"
    assert time.monotonic() - started < 5
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_ratelimit_decisions_total{limit="open-limit",outcome="store_errors"}' in metrics


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_operator_inspects_and_clears_one_key(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """`tsgate limits inspect` shows a key's windows and `tsgate limits clear` gives that one key
    its budget back (no KEYS scan, no reset of anything else)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    state = f"{redis_url()}?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    gw = start_gateway(policy_text(backend.port, LIMITS, state=state))
    assert [gw.get("/api/debug/echo/limited/x").status for _ in range(6)] == [200] * 5 + [429]

    def cli(verb: str) -> str:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "limits", verb, "--policy", str(gw.policy_path),
                                 "--limit", "echo-ip", "--key", "127.0.0.1"],
                                capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "0 left" in cli("inspect")
    assert "cleared" in cli("clear")
    assert "5 left" in cli("inspect")
    assert gw.get("/api/debug/echo/limited/x").status == 200


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary to stop and restart")
def test_redis_stopped_and_restarted(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                     tmp_path: Path) -> None:
    """A Redis of our own is stopped under the gateway: limits follow their fail mode with no 500,
    and once Redis is back (same port) limits are enforced again without restarting tsgate."""
    port = free_port()

    def redis_up() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        wait_port(port, proc=proc)
        return proc

    server = redis_up()
    try:
        gw = start_gateway(policy_text(backend.port, "ratelimit: {timeout: 50ms, breaker_cooldown: 1s}\n" + FAIL_MODES,
                                       state=f"redis://127.0.0.1:{port}/0"))
        assert [gw.get("/api/debug/echo/closed/x").status for _ in range(2)] == [200, 429]
        server.terminate()
        server.wait(10)
        during = [gw.get(p).status for p in ("/api/debug/echo/open/x", "/api/debug/echo/closed/x") for _ in range(3)]
        assert during == [200, 200, 200, 503, 503, 503]
        server = redis_up()  # an empty Redis: the counts start over
        deadline = time.monotonic() + 10
        statuses: list[int] = []
        while time.monotonic() < deadline:
            statuses = [gw.get("/api/debug/echo/open/x").status for _ in range(2)]
            if statuses == [200, 429]:
                break
            time.sleep(0.3)
        assert statuses == [200, 429]  # enforced again once the breaker let a call through
    finally:
        server.terminate()
        server.wait(10)
