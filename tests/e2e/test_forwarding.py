"""End to end: a `tsgate run` process in front of the demo backend process. Assertions are on
what the backend received (its echo endpoint), not on what the gateway claims it sent."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable

import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import Backend, GatewayProc, policy_text, request

ROUTES = """
routes:
  - id: blocked
    match: {path: "/api/debug/echo/blocked/**"}
    ip: {deny: ["127.0.0.0/8"]}
  - id: shadowed
    match: {path: "/api/debug/echo/shadowed"}
    mode: shadow
    ip: {deny: ["127.0.0.0/8"]}
  - id: any
    match: {path: "/**"}
"""


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    return start_gateway(policy_text(backend.port, ROUTES, read_timeout="1s"))


def echo(gw: GatewayProc, path: str = "/api/debug/echo", **kw: object) -> dict[str, object]:
    resp = request(gw.port, "GET", path, **kw)  # type: ignore[arg-type]
    assert resp.status == 200, resp.body
    return resp.json()  # type: ignore[no-any-return]


def header_values(received: dict[str, object], name: str) -> list[str]:
    return [v for n, v in received["headers"] if n == name]  # type: ignore[attr-defined, misc]


def test_identity_headers_from_clients_never_reach_backend(gw: GatewayProc) -> None:
    """Forged X-Tsgate-* identity headers are dropped; only tsgate's own decision header arrives."""
    got = echo(gw, headers={"X-Tsgate-User": "admin", "X-Tsgate-Roles": "admin", "x-tsgate-assertion": "forged"})
    assert header_values(got, "x-tsgate-user") == []
    assert header_values(got, "x-tsgate-roles") == []
    assert header_values(got, "x-tsgate-assertion") == []
    decision = header_values(got, "x-tsgate-decision")
    assert len(decision) == 1 and len(decision[0]) == 24


def test_forwarded_headers_are_set_by_tsgate(gw: GatewayProc) -> None:
    """X-Forwarded-For/-Proto/-Host come from tsgate; a client's spoofed copies are gone."""
    got = echo(gw, headers={"X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4", "X-Forwarded-Proto": "https",
                            "X-Forwarded-Host": "evil.example", "Forwarded": "for=1.2.3.4",
                            "Host": "social.example"})
    assert header_values(got, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(got, "x-forwarded-proto") == ["http"]
    assert header_values(got, "x-forwarded-host") == ["social.example"]
    assert header_values(got, "x-real-ip") == [] and header_values(got, "forwarded") == []
    assert header_values(got, "host") == [f"127.0.0.1:{gw_backend_port(gw)}"]


def gw_backend_port(gw: GatewayProc) -> int:
    text = gw.policy_path.read_text()
    return int(text.split("127.0.0.1:")[1].split('"')[0])


def test_override_and_hop_by_hop_headers_dropped(gw: GatewayProc) -> None:
    """URL/method override headers and headers named in Connection do not reach the backend."""
    got = echo(gw, headers={"X-Original-URL": "/admin", "X-Rewrite-URL": "/admin",
                            "X-HTTP-Method-Override": "DELETE", "Connection": "X-Secret",
                            "X-Secret": "1", "Keep-Alive": "timeout=1", "Accept": "application/json"})
    names = {n for n, _ in got["headers"]}  # type: ignore[attr-defined, misc]
    for banned in ("x-original-url", "x-rewrite-url", "x-http-method-override", "x-secret", "keep-alive"):
        assert banned not in names
    assert header_values(got, "accept") == ["application/json"]


def test_canonical_path_is_what_backend_receives(gw: GatewayProc) -> None:
    """Double slashes collapse and escapes are normalized: the backend sees the matched path."""
    got = echo(gw, path="//api/debug/echo//a/%41b/caf%c3%a9?x=1&y=%2F")
    assert got["raw_path"] == "/api/debug/echo/a/Ab/caf%C3%A9"
    assert got["query"] == "x=1&y=%2F"


def test_decision_id_on_every_response(gw: GatewayProc) -> None:
    """Every response carries Tsgate-Decision; problem bodies carry the same id."""
    ok = request(gw.port, "GET", "/api/health")
    assert ok.status == 200 and len(ok.headers["tsgate-decision"]) == 24
    bad = request(gw.port, "GET", "/api/%2e%2e/x")
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["decision_id"] == bad.headers["tsgate-decision"]


def test_ip_deny_rule_blocks_and_backend_sees_nothing(gw: GatewayProc) -> None:
    """A denied request gets 403 problem+json with a stable reason, and is never forwarded."""
    resp = request(gw.port, "GET", "/api/debug/echo/blocked/x")
    assert resp.status == 403
    body = resp.json()
    assert body["reason"] == "ip.denied" and body["type"].endswith("/ip.denied")
    assert body["decision_id"] == resp.headers["tsgate-decision"]
    # Case games don't dodge the rule (the matcher is case-insensitive on literals).
    assert request(gw.port, "GET", "/API/DEBUG/echo/BLOCKED/x").status == 403


def test_shadow_rule_records_but_does_not_block(gw: GatewayProc) -> None:
    """A shadow rule lets the request through, logs what it would have done, and counts it."""
    resp = request(gw.port, "GET", "/api/debug/echo/shadowed")
    assert resp.status == 200
    decision_id = resp.headers["tsgate-decision"]
    deadline = time.monotonic() + 5
    line = None
    while time.monotonic() < deadline and line is None:
        line = next((entry for entry in gw.log_lines() if entry.get("decision_id") == decision_id), None)
        time.sleep(0.05)
    assert line is not None
    assert line["decision"] == "allow" and line["rule"] == "shadowed"
    assert line["shadow"] == {"decision": "deny", "reason": "ip.denied", "guard": "ip"}
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_shadow_decisions_total{outcome="deny",rule="shadowed"} 1.0' in metrics


def test_post_body_streams_byte_for_byte(gw: GatewayProc) -> None:
    """A 3 MB upload streams through unchanged (no guard buffers it)."""
    body = bytes(range(256)) * (3 * 4096)
    resp = request(gw.port, "POST", "/api/debug/upload", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 200
    assert resp.json() == {"body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_upload_is_reframed(gw: GatewayProc) -> None:
    """A chunked request body arrives complete; tsgate re-frames it rather than copying framing."""
    chunks = [b"hello ", b"chunked ", b"world"]
    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n" + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])["body_length"] == len(b"".join(chunks))


def test_large_response_streams(gw: GatewayProc) -> None:
    """A 4 MiB streamed response arrives complete and intact."""
    resp = request(gw.port, "GET", "/api/debug/bytes?n=4194304")
    assert resp.status == 200 and len(resp.body) == 4194304
    assert resp.body[:4] == b"\x00\x01\x02\x03" and resp.body[-1] == (4194304 - 1) % 256


def test_server_sent_events_are_not_buffered(gw: GatewayProc) -> None:
    """SSE events reach the client as they are produced, not when the stream ends."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /api/debug/stream?n=5&interval=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        first = b""
        while b"data: 0" not in first:
            first += sock.recv(4096)
        first_at = time.monotonic() - start
    assert first_at < 1.0  # the whole stream takes >= 1.2 s


def test_upstream_timeout_is_504_problem(gw: GatewayProc) -> None:
    """A slow upstream becomes a fast 504 problem+json with no internal detail."""
    start = time.monotonic()
    resp = request(gw.port, "GET", "/api/debug/slow?seconds=3")
    assert resp.status == 504 and time.monotonic() - start < 2.5
    body = resp.json()
    assert body["reason"] == "upstream.timeout"
    assert "127.0.0.1" not in resp.body.decode()


def test_upstream_refused_is_502_problem(start_gateway: Callable[..., GatewayProc]) -> None:
    """A refused upstream connection becomes 502 problem+json, quickly, never a 500."""
    from tests.conftest import free_port

    gw = start_gateway(policy_text(free_port(), ROUTES))
    resp = request(gw.port, "GET", "/anything")
    assert resp.status == 502
    assert resp.json()["reason"] == "upstream.unavailable"


def test_keepalive_reuse_many_requests(gw: GatewayProc) -> None:
    """Many sequential requests on one client connection all succeed (pooled upstream reuse)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    for i in range(200):
        conn.request("GET", f"/api/debug/echo?i={i}")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["query"] == f"i={i}"
    conn.close()


def test_websocket_proxied_both_ways(gw: GatewayProc) -> None:
    """A WebSocket is proxied both ways; identity headers on the handshake are tsgate's, not forged."""
    with ws_connect(f"ws://127.0.0.1:{gw.port}/api/debug/ws",
                    additional_headers={"X-Tsgate-User": "mallory"}) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["user"] is None and hello["path"] == "/api/debug/ws"
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo:hi"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"


def test_websocket_guard_runs_on_handshake(gw: GatewayProc) -> None:
    """A WebSocket handshake on a denied route is refused before any upstream connection."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        ws_connect(f"ws://127.0.0.1:{gw.port}/api/debug/echo/blocked/ws").close()
    assert info.value.response.status_code == 403
