"""Redis (the shared state store) stopped, frozen and restarted under load, with a private
redis-server: limits follow their fail mode, access tokens keep verifying locally, every refusal
is problem+json (never a 500), and the gateway recovers without a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Backend, GatewayProc, Response, policy_text, request
from tests.ops.conftest import Load, RedisServer, assert_problem, safe_request

PASSWORD = "violet tangerine orbit forty-two"

POLICY = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
ratelimit: {{timeout: 50ms, breaker_cooldown: 1s}}
routes:
  - id: open
    match: {{path: "/api/debug/echo/open/**"}}
    limits: [{{name: open-limit, rate: "5/minute", key: ip, fail: open}}]
  - id: closed
    match: {{path: "/api/debug/echo/closed/**"}}
    limits: [{{name: closed-limit, rate: "5/minute", key: ip, fail: closed}}]
  - id: private
    match: {{path: "/api/debug/echo/private/**"}}
    auth: required
  - id: any
    match: {{path: "/**"}}
"""

ROUTES = ("/api/debug/echo/open/x", "/api/debug/echo/closed/x", "/api/debug/echo/private/x")


def _json(port: int, path: str, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return request(port, "POST", path, body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json", **(headers or {})})


def _sign_in(gw: GatewayProc) -> str:
    created = _json(gw.port, "/_tsgate/auth/register",
                    {"username": "alice", "email": "alice@example.org", "password": PASSWORD})
    assert created.status == 201, created.body
    tokens = _json(gw.port, "/_tsgate/auth/login", {"login": "alice", "password": PASSWORD})
    assert tokens.status == 200, tokens.body
    return str(tokens.json()["access_token"])


def _statuses(answers: list[Response | str], path: str) -> list[int]:
    return [a.status for a in answers if isinstance(a, Response) and a.headers.get("x-test-path") == path]


def _each_route(answers: list[Response | str]) -> bool:
    """At least five answers on every route."""
    return all(len(_statuses(answers, path)) >= 5 for path in ROUTES)


def _limited(answers: list[Response | str]) -> bool:
    """Both limits answered 429 at least once."""
    return 429 in _statuses(answers, ROUTES[0]) and 429 in _statuses(answers, ROUTES[1])


def _enforced(answers: list[Response | str]) -> bool:
    """Both limited routes answered (three times or more) and every answer was 429."""
    return all(len(_statuses(answers, p)) >= 3 and set(_statuses(answers, p)) == {429} for p in ROUTES[:2])


def _check_every_answer(answers: list[Response | str]) -> None:
    """No transport error, no 500, and every refusal is tsgate's problem+json."""
    errors = [a for a in answers if isinstance(a, str)]
    assert not errors, errors[:5]
    responses = [a for a in answers if isinstance(a, Response)]
    assert responses
    assert not [r for r in responses if r.status >= 500 and r.status != 503], [
        (r.status, r.body[:200]) for r in responses if r.status >= 500 and r.status != 503][:5]
    for response in responses:
        if response.status >= 400:
            assert_problem(response)


def test_redis_stopped_frozen_and_restarted_under_load(
        backend: Backend, private_redis: RedisServer, start_gateway: Callable[..., GatewayProc],
        tmp_path: Path) -> None:
    """Four clients on a fail-open limit, a fail-closed limit and an authenticated route while the
    private Redis is frozen (SIGSTOP), then stopped, then started again empty: fail-open passes
    (200 where it was 429), fail-closed answers 503 ``ratelimit.unavailable``, the access token
    keeps working (revocation_fail: open), answers stay fast, there is no 500 and no bare error,
    and after the thaw and after the restart the limits are enforced again without restarting
    the gateway."""
    gw = start_gateway(policy_text(backend.port, POLICY.format(db=tmp_path / "accounts.db"),
                                   state=private_redis.url))
    token = _sign_in(gw)
    auth = {"Authorization": f"Bearer {token}"}

    def hit(index: int) -> Response | str:
        path = ROUTES[index % len(ROUTES)]
        started = time.monotonic()
        answer = safe_request(gw.port, "GET", path, headers=auth, timeout=5)
        if isinstance(answer, Response):
            answer.headers["x-test-path"] = path
            answer.headers["x-test-seconds"] = f"{time.monotonic() - started:.3f}"
        return answer

    with Load(hit, threads=6) as load:
        # Healthy: both limits are exhausted by the load (5/minute per client address).
        load.wait(_limited, 0, 10, "both limits exhausted while Redis is up")
        assert set(_statuses(load.since(0), ROUTES[2])) == {200}

        for fault in ("freeze", "stop"):
            if fault == "freeze":
                private_redis.freeze()  # accepts connections, answers nothing
            else:
                private_redis.stop()
            failed_at = time.monotonic()
            # The circuit breaker opens after a few timeouts; from then on each limit's fail mode.
            load.wait(lambda got: 200 in _statuses(got, ROUTES[0]) and 503 in _statuses(got, ROUTES[1]),
                      failed_at + 0.5, 10, f"fail modes after Redis {fault}")
            settled = time.monotonic()
            load.wait(_each_route, settled, 10, f"traffic on every route while Redis is {fault}")
            during = load.since(settled)
            assert set(_statuses(during, ROUTES[0])) == {200}, f"fail-open limit while Redis is {fault}"
            assert set(_statuses(during, ROUTES[1])) == {503}, f"fail-closed limit while Redis is {fault}"
            assert set(_statuses(during, ROUTES[2])) == {200}, f"access token while Redis is {fault}"
            closed = [a for a in during if isinstance(a, Response) and a.status == 503]
            assert {assert_problem(r)["reason"] for r in closed} == {"ratelimit.unavailable"}
            assert all("retry-after" in r.headers for r in closed)
            slowest = max(float(a.headers["x-test-seconds"]) for a in during if isinstance(a, Response))
            assert slowest < 1.0, f"a request took {slowest}s while Redis was {fault}"
            ready = request(gw.admin_port, "GET", "/readyz")
            assert ready.status == 503 and ready.json()["checks"]["state"] is False
            if fault == "freeze":
                # Thawed, Redis answers the commands that timed out: none of those stale replies
                # may be taken for a later command's (the counts are still there: 429 again).
                private_redis.resume()
                thawed = time.monotonic()
                load.wait(_limited, thawed, 15, "limits enforced after the thaw")
                # The thawed server works off its backlog first: a check may still time out (and
                # fail open) until it has caught up; a window edge may also free one request.
                load.wait_steady(_enforced, 1.0, 15, "limits steadily enforced after the thaw")
                assert request(gw.admin_port, "GET", "/readyz").status == 200

        private_redis.start()  # empty: every count starts over
        restarted = time.monotonic()
        load.wait(_limited, restarted, 15, "limits enforced again after the restart")
        load.wait_steady(_enforced, 1.0, 15, "limits steadily enforced after the restart")
        after = load.since(restarted)
    assert set(_statuses(after, ROUTES[2])) == {200}
    _check_every_answer([a for _, _, a in load.answers])
    assert request(gw.admin_port, "GET", "/readyz").status == 200
    assert gw.proc.poll() is None
