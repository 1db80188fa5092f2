"""End-to-end tests of the demo backend, run as a real process and spoken to over real sockets."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Backend:
    port: int

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        user: str | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if user is not None:
            hdrs["X-Tsgate-User"] = user
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.demo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            be = Backend(port)
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"demo backend exited early:\n{log.read().decode(errors='replace')}")
                try:
                    if be.call("GET", "/api/health").status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("demo backend did not become healthy in time")
                time.sleep(0.05)
            yield be
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/problem+json"
    doc: dict[str, Any] = reply.json()
    assert doc["status"] == status
    assert {"type", "title", "status", "detail"} <= doc.keys()
    return doc


def test_health(backend: Backend) -> None:
    """The health endpoint answers ok."""
    assert backend.call("GET", "/api/health").json() == {"ok": True}


def test_echo_reports_exact_raw_path_query_and_headers(backend: Backend) -> None:
    """Echo shows the raw request target and headers exactly as sent, duplicates and order kept."""
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/debug/echo/a%2Fb/../c;p?x=1&x=2&y=%20&z", skip_accept_encoding=True)
        conn.putheader("X-Dup", "one")
        conn.putheader("X-Mixed-Case", "Value With Spaces")
        conn.putheader("X-Dup", "two")
        conn.endheaders()
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert doc["method"] == "GET"
    assert doc["raw_path"] == "/api/debug/echo/a%2Fb/../c;p"
    assert doc["path"] == "/api/debug/echo/a/b/../c;p"
    assert doc["query"] == "x=1&x=2&y=%20&z"
    assert doc["headers"] == [
        ["host", f"127.0.0.1:{backend.port}"],
        ["x-dup", "one"],
        ["x-mixed-case", "Value With Spaces"],
        ["x-dup", "two"],
    ]
    assert doc["client"] == "127.0.0.1"
    assert doc["body_length"] == 0


def test_echo_hashes_request_body(backend: Backend) -> None:
    """Echo reports the length and sha256 of a request body for any method."""
    payload = os.urandom(200_000)
    reply = backend.call("PUT", "/api/debug/echo", body=payload)
    doc = reply.json()
    assert doc["method"] == "PUT"
    assert doc["body_length"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert ["content-length", str(len(payload))] in doc["headers"]


def test_social_flow(backend: Backend) -> None:
    """Profiles, posts, comments, follows and the feed work end to end with identity headers."""
    alice, bob, mod = _name("alice"), _name("bob"), _name("mod")
    created = backend.call("POST", "/api/users", {"username": bob, "display_name": "Bob"}, user=bob)
    assert created.status == 201
    assert created.json()["display_name"] == "Bob"
    again = backend.call("POST", "/api/users", {"username": bob}, user=bob)
    assert again.status == 200
    _assert_problem(backend.call("POST", "/api/users", {"username": alice}, user=bob), 403)

    post_ids = []
    for i in range(3):
        reply = backend.call("POST", "/api/posts", {"body": f"post {i}"}, user=alice)
        assert reply.status == 201
        doc = reply.json()
        assert doc["author"] == alice and doc["body"] == f"post {i}"
        assert {"id", "created_at"} <= doc.keys()
        post_ids.append(doc["id"])
    assert backend.call("GET", f"/api/posts/{post_ids[0]}").json()["body"] == "post 0"

    assert backend.call("POST", f"/api/users/{alice}/follow", user=bob).json() == {"following": True}
    assert backend.call("POST", f"/api/users/{alice}/follow", user=bob).json() == {"following": True}
    profile = backend.call("GET", f"/api/users/{alice}").json()
    assert profile["followers_count"] == 1 and profile["post_count"] == 3
    followers = backend.call("GET", f"/api/users/{alice}/followers").json()
    assert followers["items"] == [{"username": bob, "display_name": "Bob"}]
    following = backend.call("GET", f"/api/users/{bob}/following").json()
    assert [u["username"] for u in following["items"]] == [alice]

    page1 = backend.call("GET", "/api/feed?limit=2", user=bob).json()
    assert [p["id"] for p in page1["items"]] == [post_ids[2], post_ids[1]]
    page2 = backend.call("GET", f"/api/feed?limit=2&cursor={page1['next_cursor']}", user=bob).json()
    assert [p["id"] for p in page2["items"]] == [post_ids[0]]
    assert page2["next_cursor"] is None

    comment = backend.call("POST", f"/api/posts/{post_ids[0]}/comments", {"body": "nice"}, user=bob)
    assert comment.status == 201
    comment_id = comment.json()["id"]
    comments = backend.call("GET", f"/api/posts/{post_ids[0]}/comments").json()["items"]
    assert [(c["author"], c["body"]) for c in comments] == [(bob, "nice")]
    _assert_problem(backend.call("DELETE", f"/api/comments/{comment_id}", user=alice), 403)
    mod_hdrs = {"X-Tsgate-Roles": "user, Moderator"}
    assert backend.call("DELETE", f"/api/comments/{comment_id}", headers=mod_hdrs, user=mod).status == 204

    _assert_problem(backend.call("DELETE", f"/api/posts/{post_ids[2]}", user=bob), 403)
    assert backend.call("DELETE", f"/api/posts/{post_ids[2]}", user=alice).status == 204
    _assert_problem(backend.call("GET", f"/api/posts/{post_ids[2]}"), 404)
    feed = backend.call("GET", "/api/feed", user=bob).json()
    assert [p["id"] for p in feed["items"]] == [post_ids[1], post_ids[0]]

    assert backend.call("DELETE", f"/api/users/{alice}/follow", user=bob).json() == {"following": False}
    assert backend.call("GET", "/api/feed", user=bob).json()["items"] == []


def test_follow_rules(backend: Backend) -> None:
    """Self-follow is 400 and following an unknown user is 404."""
    carol = _name("carol")
    _assert_problem(backend.call("POST", f"/api/users/{carol}/follow", user=carol), 400)
    _assert_problem(backend.call("POST", f"/api/users/{_name('ghost')}/follow", user=carol), 404)
    _assert_problem(backend.call("GET", f"/api/users/{_name('ghost')}"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/posts"),
        ("POST", "/api/users"),
        ("POST", "/api/users/anyone/follow"),
        ("DELETE", "/api/posts/1"),
        ("GET", "/api/feed"),
    ],
)
def test_anonymous_write_is_401_problem(backend: Backend, method: str, path: str) -> None:
    """Writes (and the feed) without X-Tsgate-User get a 401 problem+json."""
    body = {"body": "x"} if method == "POST" else None
    _assert_problem(backend.call(method, path, body), 401)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ('{"body": "unterminated', JSON, 400),
        ("", JSON, 400),
        (b'{"body": "\xff\xfe"}', JSON, 400),
        ("[" * 5000 + "]" * 5000, JSON, 400),
        ("[]", JSON, 422),
        ('{"body": 5}', JSON, 422),
        ('{"body": "   "}', JSON, 422),
        ('{"body": "ok", "admin": true}', JSON, 422),
        (json.dumps({"body": "x" * 10_001}), JSON, 422),
        (json.dumps({"body": "x" * 70_000}), JSON, 413),
        ('{"body": "x"}', {"Content-Type": "text/plain"}, 415),
    ],
)
def test_bad_post_body_is_problem_not_500(
    backend: Backend, body: str | bytes, headers: dict[str, str], status: int
) -> None:
    """Malformed, invalid, oversized or mistyped bodies get the right 4xx problem+json."""
    _assert_problem(backend.call("POST", "/api/posts", body, headers=headers, user=_name("eve")), status)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/posts/not-a-number", 422),
        ("GET", "/api/posts/99999999999999999999999999", 404),
        ("GET", "/api/feed?limit=1000", 422),
        ("GET", "/api/feed?cursor=zzz", 400),
        ("GET", "/api/debug/stream?interval=nan", 422),
        ("GET", "/api/no/such/route", 404),
        ("PUT", "/api/health", 405),
    ],
)
def test_bad_params_are_problems(backend: Backend, method: str, path: str, status: int) -> None:
    """Bad path/query parameters and unknown routes are problem+json, never 500."""
    _assert_problem(backend.call(method, path, user=_name("eve")), status)


def test_ambiguous_identity_rejected(backend: Backend) -> None:
    """Two X-Tsgate-User headers or a malformed user name are a 400."""
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/feed")
        conn.putheader("X-Tsgate-User", "alice")
        conn.putheader("X-Tsgate-User", "mallory")
        conn.endheaders()
        resp = conn.getresponse()
        reply = Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()
    _assert_problem(reply, 400)
    _assert_problem(backend.call("GET", "/api/feed", user="bad name/.."), 400)


def test_sse_events_arrive_spaced(backend: Backend) -> None:
    """SSE events are flushed one at a time, so the first arrives well before the last."""
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
    try:
        conn.request("GET", "/api/debug/stream?n=5&interval=0.2")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        arrivals: list[tuple[float, bytes]] = []
        while line := resp.readline():
            if line.startswith(b"data:"):
                arrivals.append((time.monotonic(), line))
    finally:
        conn.close()
    assert [line for _, line in arrivals] == [f"data: {i}\n".encode() for i in range(5)]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6


def test_bytes_and_upload_stream(backend: Backend) -> None:
    """/bytes serves the documented pattern and /upload hashes a chunked upload."""
    n = 1_048_576 + 123
    reply = backend.call("GET", f"/api/debug/bytes?n={n}")
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.body == (bytes(range(256)) * (n // 256 + 1))[:n]

    payload = os.urandom(300_000)
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
    try:
        chunks = (payload[i : i + 50_000] for i in range(0, len(payload), 50_000))
        conn.request("POST", "/api/debug/upload", body=chunks, encode_chunked=True)
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert doc == {"body_length": len(payload), "body_sha256": hashlib.sha256(payload).hexdigest()}


def test_slow_endpoint_sleeps(backend: Backend) -> None:
    """/slow waits the requested time before answering."""
    start = time.monotonic()
    assert backend.call("GET", "/api/debug/slow?seconds=0.3").json() == {"ok": True}
    assert time.monotonic() - start >= 0.3


def test_websocket_echo_with_identity(backend: Backend) -> None:
    """The websocket greets with the handshake identity, then echoes text and binary frames."""
    url = f"ws://127.0.0.1:{backend.port}/api/debug/ws?room=1"
    headers = {"X-Tsgate-User": "alice", "X-Tsgate-Roles": "admin"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["user"] == "alice"
        assert hello["path"] == "/api/debug/ws"
        assert hello["query"] == "room=1"
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
    with connect(url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["user"] is None
