"""SECURITY.md classes 1-3 and 6, over real sockets: hostile bytes get a clear 4xx (never a
500, never a traceback) and the backend receives nothing, or exactly the canonical request.

"What the backend received" is read from the decision log of a second, echo-only route: each
test sends its hostile request, then asks the backend (through the gateway) for the echo of a
marker, and checks the gateway's log for what it forwarded."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import Backend, GatewayProc, policy_text, raw_exchange, request

ROUTES = """
routes:
  - id: admin
    match: {path: "/api/debug/echo/admin/**"}
    ip: {deny: ["0.0.0.0/0", "::/0"]}
  - id: any
    match: {path: "/**"}
"""


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    return start_gateway(policy_text(backend.port, ROUTES))


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw[9:12])


def forwarded_count(gw: GatewayProc) -> int:
    """How many requests the gateway forwarded: allowed, and answered by the upstream (no
    ``reason`` such as client.disconnected or upstream.unavailable)."""
    return sum(1 for e in gw.log_lines()
               if e.get("decision") == "allow" and e.get("rule") == "any" and "reason" not in e)


def settle() -> None:
    time.sleep(0.15)  # the decision log is written off the event loop


# --- class 1: path confusion ------------------------------------------------------------------

@pytest.mark.parametrize(
    "target",
    [
        b"/api/debug/echo/x/%2e%2e/admin/secret",
        b"/api/debug/echo/x/../admin/secret",
        b"/api/debug/echo/admin%2fsecret",
        b"/api/debug/echo/x/..;/admin/secret",
        b"/api/debug/echo/admin;/secret",
        b"/api/debug/echo/x%5c..%5cadmin",
        b"/api/debug/echo/x\\..\\admin",
        b"/api/debug/echo/admin%00/secret",
        b"/api/debug/echo/%2e/admin",
    ],
)
def test_path_confusion_refused_and_not_forwarded(gw: GatewayProc, target: bytes) -> None:
    """Every ambiguous spelling of a protected path is a 400 problem and never reaches the backend."""
    before = forwarded_count(gw)
    raw = raw_exchange(gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 400
    assert b"application/problem+json" in raw and b"Traceback" not in raw
    settle()
    assert forwarded_count(gw) == before


@pytest.mark.parametrize(
    "target",
    [b"/api/debug/echo/ADMIN/secret", b"//api/debug/echo//admin/secret", b"/api/debug/echo/%61dmin/secret",
     b"/api/debug/echo/admin/secret/"],
)
def test_path_variants_hit_the_protected_rule(gw: GatewayProc, target: bytes) -> None:
    """Case, repeated slashes, escaped letters and trailing slashes all match the admin rule (403)."""
    raw = raw_exchange(gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 403
    assert b'"reason":"ip.denied"' in raw


def test_absolute_form_target_uses_only_the_path(gw: GatewayProc) -> None:
    """An absolute-form target is reduced to its path, authorized and forwarded as that path."""
    raw = raw_exchange(gw.port, b"GET http://evil.example/api/debug/echo/admin/x HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n")
    assert status_of(raw) == 403
    raw = raw_exchange(gw.port, b"GET http://evil.example/api/debug/echo/ok HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n")
    assert status_of(raw) == 200
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body["raw_path"] == "/api/debug/echo/ok"


# --- class 2: framing / smuggling -------------------------------------------------------------

SMUGGLING = {
    "cl_and_te": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/debug/echo/admin/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "duplicate_cl": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "obfuscated_te": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
                             b"3\r\nabc\r\n0\r\n\r\n",
    "bad_chunk_size": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nabc\r\n0\r\n\r\n",
    "bare_lf_line_endings": b"POST /api/debug/upload HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
    "negative_cl": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "cl_with_plus": b"POST /api/debug/upload HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "header_folding": b"GET /api/debug/echo HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n X-Tsgate-User: admin\r\n\r\n",
    "nul_in_header": b"GET /api/debug/echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "get_with_body": b"GET /api/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "two_hosts": b"GET /api/debug/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_ambiguous_framing_refused(gw: GatewayProc, name: str) -> None:
    """Conflicting or malformed framing is a 400 (never 500) and nothing reaches the backend."""
    before = forwarded_count(gw)
    raw = raw_exchange(gw.port, SMUGGLING[name])
    assert status_of(raw) == 400, raw[:300]
    assert b"Traceback" not in raw
    assert raw.count(b"HTTP/1.1 ") == 1  # no second (smuggled) response
    settle()
    assert forwarded_count(gw) == before


def test_pipelined_requests_each_checked(gw: GatewayProc) -> None:
    """Two pipelined requests on one connection are each routed and checked on their own."""
    raw = raw_exchange(gw.port, b"GET /api/debug/echo/ok HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /api/debug/echo/admin/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    statuses = [int(raw[i + 9:i + 12]) for i in range(len(raw)) if raw.startswith(b"HTTP/1.1 ", i)]
    assert statuses == [200, 403]


# --- class 3: header spoofing -----------------------------------------------------------------

def test_connection_header_cannot_strip_forwarded_for(gw: GatewayProc) -> None:
    """Naming X-Forwarded-For in Connection does not remove the one tsgate sets."""
    resp = request(gw.port, "GET", "/api/debug/echo", headers={"Connection": "X-Forwarded-For, X-Tsgate-Decision"})
    headers = resp.json()["headers"]
    assert ["x-forwarded-for", "127.0.0.1"] in headers
    assert any(n == "x-tsgate-decision" for n, _ in headers)


def test_method_override_does_not_change_the_method(gw: GatewayProc) -> None:
    """X-HTTP-Method-Override is dropped; the backend sees the real method."""
    resp = request(gw.port, "GET", "/api/debug/echo", headers={"X-HTTP-Method-Override": "DELETE"})
    body = resp.json()
    assert body["method"] == "GET"
    assert all(n != "x-http-method-override" for n, _ in body["headers"])


@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT", b"PROPFIND"])
def test_unknown_methods_refused(gw: GatewayProc, method: bytes) -> None:
    """TRACE, CONNECT and other methods outside the policy's set are 405 problems."""
    target = b"127.0.0.1:1" if method == b"CONNECT" else b"/api/debug/echo"
    raw = raw_exchange(gw.port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) in (400, 405)
    assert b"Traceback" not in raw


# --- class 6: oversize ------------------------------------------------------------------------

def test_oversized_header_block_is_431(gw: GatewayProc) -> None:
    """A header block past the policy limit is refused with 431 and not forwarded."""
    resp = request(gw.port, "GET", "/api/debug/echo", headers={f"X-Pad-{i}": "a" * 1000 for i in range(40)})
    assert resp.status == 431
    assert resp.json()["reason"] == "request.headers_too_large"


def test_endless_header_stream_is_cut_off(gw: GatewayProc) -> None:
    """A client streaming one endless header gets 431 and a closed connection; the gateway lives on."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /api/debug/echo HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        answer = b""
        try:
            for _ in range(200):
                sock.sendall(b"a" * 4096)
        except OSError:
            pass  # the server closed on us, as it should
        sock.settimeout(2)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431")
    assert request(gw.port, "GET", "/api/health").status == 200


def test_overlong_url_is_refused(gw: GatewayProc) -> None:
    """A 10 kB path is refused (414 or 431), never forwarded."""
    resp = request(gw.port, "GET", "/api/" + "a" * 10000)
    assert resp.status in (414, 431)


def test_gateway_never_500s_on_garbage(gw: GatewayProc) -> None:
    """Random garbage request lines get 400, and the gateway keeps serving."""
    for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"G\x00T / HTTP/1.1\r\n\r\n", b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"):
        raw = raw_exchange(gw.port, junk)
        assert raw == b"" or status_of(raw) in (400, 505), raw[:100]
    assert request(gw.port, "GET", "/api/health").status == 200
