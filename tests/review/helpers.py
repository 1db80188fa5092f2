"""Shared pieces of the review tests: a gateway policy with moderation, identity and the review
webhook; a local webhook receiver (a real HTTP server on a socket) that checks signatures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from review.webhooks import verify_signature
from tests.conftest import ROOT, GatewayProc, Response, request

PASSWORD = "violet tangerine orbit forty-two"
BACKEND_SECRET = "backend-shared-secret-0123456789abcdef"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
ENV = {"TEST_BACKEND_SECRET": BACKEND_SECRET, "TEST_REVIEW_WEBHOOK_SECRET": WEBHOOK_SECRET}

ROUTES = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
  external:
    - {{name: backend, scheme: Token, algorithms: [HS256], secret_env: TEST_BACKEND_SECRET, issuer: backend}}
review:
  lease: 120s
  webhook: {{url: "{webhook}", secret_env: TEST_REVIEW_WEBHOOK_SECRET, attempts: 3, backoff: 50ms, timeout: 2s}}
  appeal_limit: 3
routes:
  - id: comments
    match: {{methods: [POST], path: "/api/posts/{{post_id}}/comments"}}
    auth: required
    moderation: {{content: [/body]}}
  - id: any
    match: {{path: "/**"}}
"""

SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
        "To claim call 09061701461. Claim code KL341. Valid 12 hours only.")
SPAM_2 = ("URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! Txt the word: "
          "CLAIM to No: 81010 T&C www.dbuk.net LCCLTD POBOX 4403LDNW1A7RW18")


def backend_token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iss": "backend", "iat": now, "exp": now + 3600}, BACKEND_SECRET,
                      algorithm="HS256")


def post_json(port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return request(port, "POST", path, body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json", **(headers or {})})


def create_account(gw: GatewayProc, username: str, role: str | None = None) -> None:
    """`tsgate accounts create` (the CLI an operator runs)."""
    args = [sys.executable, "-m", "gateway.cli", "accounts", "create", "--policy", str(gw.policy_path),
            "--username", username, "--email", f"{username}@example.org", "--password-stdin"]
    if role:
        args += ["--role", role]
    result = subprocess.run(args, input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def access_token(gw: GatewayProc, username: str) -> str:
    response = post_json(gw.port, "/_tsgate/auth/login", {"login": username, "password": PASSWORD})
    assert response.status == 200, response.body
    return str(response.json()["access_token"])


def new_post(gw: GatewayProc, author: str = "alice") -> int:
    response = post_json(gw.port, "/api/posts", {"body": "My holiday photos"},
                         {"Authorization": f"Token {backend_token(author)}"})
    assert response.status == 201, response.body
    return int(response.json()["id"])


def comment(gw: GatewayProc, post_id: int, text: str, headers: dict[str, str]) -> Response:
    return post_json(gw.port, f"/api/posts/{post_id}/comments", {"body": text}, headers)


def api(gw: GatewayProc, method: str, path: str, token: str | None, body: dict[str, Any] | None = None) -> Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return request(gw.admin_port, method, path, body=data, headers=headers)


@dataclass
class Receiver:
    """A webhook receiver on a real socket: records verified deliveries; answers ``status``."""

    port: int
    status: int = 204
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/moderation"

    def wait(self, count: int, seconds: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


def receiver() -> Iterator[Receiver]:
    state = Receiver(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature = self.headers.get("X-Tsgate-Signature", "")
            if verify_signature(WEBHOOK_SECRET.encode(), body, signature, time.time()):
                if state.status < 300:
                    state.received.append({"event": self.headers.get("X-Tsgate-Event"),
                                           "delivery": self.headers.get("X-Tsgate-Delivery"),
                                           "payload": json.loads(body)})
            else:
                state.bad_signatures += 1
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def start(start_gateway: Callable[..., GatewayProc], policy: str) -> GatewayProc:
    return start_gateway(policy, extra_env=ENV)


@dataclass
class Recorder:
    """A backend on a real socket that records every request (method, target, headers, body) and
    answers ``status``. ``start``/``stop`` on a fixed port: a backend that is down, then up."""

    port: int
    status: int = 201
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> Recorder:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                state.requests.append({"method": self.command, "target": self.path,
                                       "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body})
                self.send_response(state.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_PATCH = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(5)
            self.server = None

    def wait(self, count: int, seconds: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests

    @staticmethod
    def header(request: dict[str, Any], name: str) -> list[str]:
        return [v for k, v in request["headers"] if k == name.lower()]
