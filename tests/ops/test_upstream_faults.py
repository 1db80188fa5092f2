"""The upstream slow, down and flapping, with real processes: a timeout is 504 problem+json, a
refused connection 502 problem+json, and when the backend process is killed and started again
on the same port the pooled keep-alive connections are replaced and requests succeed again.
Never a 500."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, Backend, GatewayProc, Response, free_port, policy_text, request, wait_port
from tests.ops.conftest import Load, assert_problem, port_refuses, safe_request

OPEN = """
routes:
  - id: any
    match: {path: "/**"}
"""


class FlappingBackend:
    """The demo backend as a process of this test, killed (SIGKILL) and started on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.demo", "--host", "127.0.0.1", "--port",
                                      str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def flapping() -> Iterator[FlappingBackend]:
    backend = FlappingBackend()
    backend.start()
    try:
        yield backend
    finally:
        backend.kill()


def test_slow_upstream_is_504_problem_and_the_connection_is_not_reused(
        backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """An upstream slower than read_timeout (0.5 s) gets 504 ``upstream.timeout`` problem+json
    in about that time; the next requests on the pool are answered normally."""
    gw = start_gateway(policy_text(backend.port, OPEN, read_timeout="500ms"))
    started = time.monotonic()
    slow = gw.get("/api/debug/slow?seconds=3")
    elapsed = time.monotonic() - started
    assert slow.status == 504 and assert_problem(slow)["reason"] == "upstream.timeout"
    assert 0.4 < elapsed < 2.0, elapsed
    assert [gw.get("/api/debug/echo/x").status for _ in range(5)] == [200] * 5
    assert gw.get("/api/debug/slow?seconds=0.1").status == 200
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_upstream_errors_total{reason="upstream.timeout"} 1.0' in metrics


def test_upstream_down_is_502_problem(start_gateway: Callable[..., GatewayProc]) -> None:
    """Nothing listens at the upstream: every method gets 502 ``upstream.unavailable`` problem+json
    at once, readiness says which check fails, and the gateway itself stays up."""
    dead = free_port()
    gw = start_gateway(policy_text(dead, OPEN))
    assert port_refuses(dead)
    for method, body in (("GET", None), ("POST", b'{"a": 1}'), ("DELETE", None)):
        started = time.monotonic()
        answer = request(gw.port, method, "/api/debug/echo/x", body=body,
                         headers={"Content-Type": "application/json"} if body else {})
        assert answer.status == 502 and assert_problem(answer)["reason"] == "upstream.unavailable", answer.body
        assert time.monotonic() - started < 1.5
    ready = request(gw.admin_port, "GET", "/readyz")
    assert ready.status == 503 and ready.json()["checks"]["upstream"] is False
    assert request(gw.admin_port, "GET", "/healthz").status == 200


def test_flapping_upstream_pool_recovers(flapping: FlappingBackend,
                                         start_gateway: Callable[..., GatewayProc]) -> None:
    """Four keep-alive clients (GET and POST) while the backend process is killed and restarted on
    the same port three times: while it is down answers are 502 problem+json, never 500 or a
    broken connection; after each restart requests succeed again through fresh upstream
    connections, without restarting the gateway. The one exception is a response the backend was
    in the middle of when it was killed: its head was already forwarded (responses stream), so
    tsgate cuts the client connection rather than invent the rest of the body — as nginx does."""
    gw = start_gateway(policy_text(flapping.port, OPEN))
    body = json.dumps({"comment": "x" * 200}).encode()
    kills: list[float] = []
    cut: list[tuple[float, float, str]] = []  # (started, ended, error) of requests that failed

    def hit(index: int) -> Response | str:
        started = time.monotonic()
        if index % 2:
            answer = safe_request(gw.port, "POST", f"/api/debug/echo/flap/{index}", body=body,
                                  headers={"Content-Type": "application/json"}, timeout=5)
        else:
            answer = safe_request(gw.port, "GET", f"/api/debug/echo/flap/{index}", timeout=5)
        if isinstance(answer, str):
            cut.append((started, time.monotonic(), answer))
        return answer

    def statuses(answers: list[Response | str]) -> set[int | str]:
        return {a.status if isinstance(a, Response) else a for a in answers}

    with Load(hit, threads=4) as load:
        load.wait(lambda got: len(got) >= 20, 0, 10, "traffic through a healthy upstream")
        for _ in range(3):
            assert statuses(load.since(0)) <= {200, 502}
            kills.append(time.monotonic())
            flapping.kill()
            killed = time.monotonic()
            load.wait(lambda got: 502 in statuses(got), killed, 10, "502 while the backend is down")
            flapping.start()
            restarted = time.monotonic()
            load.wait(lambda got: 200 in statuses(got), restarted, 10, "200 after the backend restarted")
            recovered = time.monotonic() + 0.2  # answers already in flight at the restart may be 502
            load.wait(lambda got: len(got) >= 20, recovered, 10, "traffic after the restart")
            assert statuses(load.since(recovered)) == {200}, statuses(load.since(recovered))
    # Only a response in flight at a kill may be cut short, and only as a short read of its body.
    for started, ended, error in cut:
        assert error.startswith("error: IncompleteRead") and any(started <= k <= ended for k in kills), (
            started, ended, error, kills)
    assert len(cut) <= len(kills) * 4, cut
    answers = [a for _, _, a in load.answers if isinstance(a, Response)]
    for answer in answers:
        assert answer.status in (200, 502), answer
        if answer.status == 502:
            assert assert_problem(answer)["reason"] == "upstream.unavailable"
    stats = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_upstream_errors_total{reason="upstream.unavailable"}' in stats
    assert gw.proc.poll() is None
