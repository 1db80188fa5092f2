"""Life cycle and slow clients, with a real `tsgate run` process: SIGTERM drains (readiness false
first, in-flight requests finish and are logged, new connections refused, exit 0), and the head
deadline and connection cap hold against slowloris-style clients."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from tests.conftest import Backend, GatewayProc, Response, policy_text, redis_url, request

OPEN = """
routes:
  - id: any
    match: {path: "/**"}
"""


def test_sigterm_drains_in_flight_request(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """SIGTERM mid-request: /readyz turns 503 (draining) at once, the listener closes after the
    drain delay, the slow request still completes with 200 and its decision log line, exit 0."""
    gw = start_gateway(policy_text(backend.port, OPEN), args=["--drain-delay", "0.4", "--drain-timeout", "10"])
    ready = request(gw.admin_port, "GET", "/readyz")
    assert ready.status == 200 and ready.json()["draining"] is False
    result: list[Response] = []
    slow = threading.Thread(target=lambda: result.append(gw.get("/api/debug/slow?seconds=1.8", timeout=15)))
    slow.start()
    time.sleep(0.5)  # the request is at the backend now
    gw.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    draining = None
    while time.monotonic() - signalled < 0.5:
        draining = request(gw.admin_port, "GET", "/readyz")
        if draining.status == 503:
            break
        time.sleep(0.02)
    assert draining is not None and draining.status == 503 and draining.json()["draining"] is True
    refused = False
    while time.monotonic() - signalled < 2.0 and not refused:
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=0.5):
                time.sleep(0.05)
        except ConnectionRefusedError:
            refused = True
    assert refused, "the proxy still accepts connections while draining"
    assert slow.is_alive(), "the slow request ended before the listener closed"
    slow.join(10)
    assert result and result[0].status == 200, result
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - signalled < 8
    lines = [e for e in gw.log_lines() if e.get("path") == "/api/debug/slow"]
    assert len(lines) == 1 and lines[0]["status"] == 200 and lines[0]["decision"] == "allow"


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_sigterm_with_workers_closes_the_shared_listener(backend: Backend,
                                                         start_gateway: Callable[..., GatewayProc]) -> None:
    """--workers 2: after SIGTERM to the parent nothing listens on the port any more (the parent's
    copy of the socket is closed too), the in-flight request completes, and the parent exits 0."""
    state = f"{redis_url()}?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    gw = start_gateway(policy_text(backend.port, OPEN, state=state), workers=2, args=["--drain-delay", "0.3"])
    result: list[Response] = []
    slow = threading.Thread(target=lambda: result.append(gw.get("/api/debug/slow?seconds=1.5", timeout=15)))
    slow.start()
    time.sleep(0.5)
    gw.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    refused = False
    while time.monotonic() - signalled < 1.8 and not refused:
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=0.5):
                time.sleep(0.05)
        except ConnectionRefusedError:
            refused = True
    assert refused, "a connection was still accepted (into a backlog nobody serves) while draining"
    slow.join(10)
    assert result and result[0].status == 200, result
    assert gw.proc.wait(10) == 0


@pytest.fixture
def strict(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    return start_gateway(policy_text(backend.port, OPEN), args=["--header-timeout", "1", "--body-timeout", "1",
                                                                    "--max-connections", "3"])


def read_all(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body (head and body may come in separate reads)."""
    sock.settimeout(3)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_slowloris_head_is_cut_off_with_408(strict: GatewayProc) -> None:
    """A client sending its head a byte every 0.25 s gets 408 problem+json and a closed connection
    after the 1 s head deadline, while a normal client is served meanwhile."""
    head = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        started = time.monotonic()
        answer = b""
        for i, byte in enumerate(head):
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                pass
            if answer:
                break
            if i == 2:
                assert strict.get("/api/health").status == 200  # others are served meanwhile
        answer += read_all(sock, 2)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"application/problem+json" in answer and b"request.header_timeout" in answer
    assert 0.9 < elapsed < 3.5


def test_slow_second_request_on_keepalive_gets_408(strict: GatewayProc) -> None:
    """On a kept-alive connection the deadline runs from the next request's first byte: a whole
    first request is served, a second head left unfinished gets 408 about a second later."""
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        time.sleep(0.5)  # idle between requests is the keep-alive timeout's business, not this one
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHo")
        started = time.monotonic()
        answer = read_all(sock, 4)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert 0.8 < elapsed < 3


def test_stalled_body_ends_the_connection(strict: GatewayProc) -> None:
    """A body that stops arriving for longer than --body-timeout ends the connection; the request is
    logged as a client disconnect (499), and the gateway keeps serving."""
    head = b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        sock.sendall(head + b"x" * 10)
        started = time.monotonic()
        answer = read_all(sock, 5)
        elapsed = time.monotonic() - started
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
    assert 0.9 < elapsed < 4
    deadline = time.monotonic() + 5
    while not [e for e in strict.log_lines() if e.get("path") == "/api/debug/upload"]:
        assert time.monotonic() < deadline, "no decision log line for the stalled upload"
        time.sleep(0.05)
    line = next(e for e in strict.log_lines() if e.get("path") == "/api/debug/upload")
    assert line["status"] == 499 and line["reason"] == "client.disconnected"
    assert strict.get("/api/health").status == 200


def test_idle_connection_without_request_is_closed(strict: GatewayProc) -> None:
    """A connection that never sends a byte is closed after the head deadline (no answer owed)."""
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        started = time.monotonic()
        assert read_all(sock, 4) == b""
        assert 0.9 < time.monotonic() - started < 3.5


def test_connection_cap_answers_503_problem(strict: GatewayProc) -> None:
    """Past --max-connections, a new connection gets 503 problem+json at once; when one closes,
    requests are served again."""
    idle = [socket.create_connection(("127.0.0.1", strict.port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as extra:
            answer = read_all(extra, 2)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"server.busy" in answer and b"application/problem+json" in answer
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert strict.get("/api/health").status == 200
