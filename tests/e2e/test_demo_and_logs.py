"""`tsgate demo` end to end, the JSONL decision log, and bounded buffered bodies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Backend, GatewayProc, free_port, policy_text, request, wait_port


def test_tsgate_demo_runs_and_prints_what_to_try(tmp_path: Path) -> None:
    """`tsgate demo` starts the backend and the gateway, prints URLs and commands, and stops cleanly."""
    port, admin, backend_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), "--admin-port", str(admin),
         "--backend-port", str(backend_port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if k != "TSGATE_ADMIN_TOKEN"},
    )
    try:
        assert proc.stdout is not None
        out = ""
        deadline = time.monotonic() + 30
        while "Ctrl+C" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert f"http://127.0.0.1:{port}" in out and "curl" in out
        token = out.split("(token: ", 1)[1].split(")", 1)[0]
        echo = request(port, "GET", "/api/debug/echo", headers={"X-Tsgate-User": "mallory"})
        assert echo.status == 200
        assert all(n != "x-tsgate-user" for n, _ in echo.json()["headers"])
        assert request(port, "GET", "/api/posts/%2e%2e/admin").status == 400
        policy = request(admin, "GET", "/policy", headers={"Authorization": f"Bearer {token}"})
        assert policy.status == 200
        # The demo is the identity provider: sign up, sign in, post; the backend checks the assertion.
        password = "violet tangerine orbit forty-two"
        json_headers = {"Content-Type": "application/json"}
        user = {"username": "demo_user", "email": "demo@example.org", "password": password}
        assert request(port, "POST", "/_tsgate/auth/register", json.dumps(user).encode(), json_headers).status == 201
        login = request(port, "POST", "/_tsgate/auth/login",
                        json.dumps({"login": "demo_user", "password": password}).encode(), json_headers)
        access = login.json()["access_token"]
        post = request(port, "POST", "/api/posts", json.dumps({"body": "hello"}).encode(),
                       {**json_headers, "Authorization": f"Bearer {access}"})
        assert post.status == 201 and post.json()["author"] == "demo_user"
        assert request(port, "POST", "/api/posts", json.dumps({"body": "x"}).encode(), json_headers).status == 401
        # Straight to the backend with a forged identity and no assertion: refused by the backend.
        forged = request(backend_port, "POST", "/api/posts", json.dumps({"body": "x"}).encode(),
                         {**json_headers, "X-Tsgate-User": "demo_user"})
        assert forged.status == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()
    for p in (port, backend_port):  # everything it started is gone
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", p)) != 0


def test_jsonl_decision_log_with_rotation(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                          tmp_path: Path) -> None:
    """Every decision goes to the JSONL file, which rotates by size and keeps backups."""
    log_file = tmp_path / "decisions.jsonl"
    gw = start_gateway(policy_text(backend.port, f"""
log: {{decisions: none, decision_log: "{log_file}", decision_log_max_bytes: 4KiB, decision_log_backups: 2}}
routes:
  - {{id: any, match: {{path: "/**"}}}}
"""))
    ids = [request(gw.port, "GET", f"/api/health?i={i}").headers["tsgate-decision"] for i in range(60)]
    time.sleep(0.3)
    files = sorted(tmp_path.glob("decisions.jsonl*"))
    assert [f.name for f in files] == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    newest = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert newest and newest[-1]["decision_id"] == ids[-1]
    expected = {"decision_id", "rule", "decision", "status", "method", "path", "client_ip", "latency_ms"}
    assert expected <= newest[-1].keys()
    assert gw.log_lines() == []  # decisions: none keeps stderr quiet


def test_chunked_body_over_limit_is_413(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """A chunked body (buffered before forwarding) past max_body_bytes is a 413 and is not forwarded."""
    gw = start_gateway(policy_text(backend.port, """
request: {max_body_bytes: 1KiB}
routes:
  - {id: any, match: {path: "/**"}}
"""))
    wait_port(gw.port)
    chunk = b"x" * 600
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk_in := sock.recv(65536):
            data += chunk_in
    assert data.startswith(b"HTTP/1.1 413")
    assert b'"reason":"request.body_too_large"' in data
    small = request(gw.port, "POST", "/api/debug/upload", body=b"y" * 500,
                    headers={"Content-Type": "application/octet-stream"})
    assert small.status == 200 and small.json()["body_length"] == 500
