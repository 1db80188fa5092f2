"""Decision API end to end: the real nginx (``auth_request``) in front of the demo backend asking a
`tsgate run` process, and the Traefik (``forwardAuth``) and Envoy (``ext_authz`` HTTP) endpoints
over sockets. Same policy, same guards, identity headers copied upstream."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.proxy.decide import Flavor, _answered_status
from tests.conftest import Backend, GatewayProc, Response, free_port, policy_text, request, stop, wait_port
from tests.e2e.test_identity import bearer, login, register

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SPOOFER = "127.0.0.2"  # a second loopback source address: a client that is not a trusted proxy

POLICY = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
routes:
  - id: private
    match: {{path: "/api/debug/echo/private/**"}}
    auth: required
  - id: limited
    match: {{path: "/api/debug/echo/limited/**"}}
    limits:
      - {{name: decide-ip, rate: "2/minute", key: ip}}
  - id: comments
    match: {{methods: [POST], path: "/api/debug/echo/comments"}}
    moderation: {{content: [/body]}}
  - id: any
    match: {{path: "/**"}}
    ip: {{deny: ["{spoofer}/32"]}}
"""
SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
        "To claim call 09061701461. Claim code KL341. Valid 12 hours only.")
CLEAN = "Lovely photo of the lake. Are we still on for the walk on Sunday morning? I can bring coffee."

# As documented in docs/operations.md ("Decision API"), with test ports.
NGINX_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen {spoofer}:{port};

        # tsgate's own endpoints (login, tokens, challenges) go to tsgate itself.
        location /_tsgate/ {{
            proxy_pass http://127.0.0.1:{tsgate};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}

        location = /_tsgate_decide {{
            internal;
            proxy_pass http://127.0.0.1:{tsgate}/_tsgate/decide/nginx;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}

        location / {{
            auth_request /_tsgate_decide;
            auth_request_set $tsgate_user $upstream_http_x_tsgate_user;
            auth_request_set $tsgate_roles $upstream_http_x_tsgate_roles;
            auth_request_set $tsgate_assertion $upstream_http_x_tsgate_assertion;
            auth_request_set $tsgate_decision $upstream_http_x_tsgate_decision;
            auth_request_set $tsgate_status $upstream_http_x_tsgate_status;
            auth_request_set $tsgate_refusal $upstream_http_tsgate_decision;
            auth_request_set $tsgate_retry_after $upstream_http_retry_after;
            error_page 403 = @tsgate_refused;

            # Always set: an empty value removes whatever the client sent under these names.
            proxy_set_header X-Tsgate-User $tsgate_user;
            proxy_set_header X-Tsgate-Roles $tsgate_roles;
            proxy_set_header X-Tsgate-Assertion $tsgate_assertion;
            proxy_set_header X-Tsgate-Decision $tsgate_decision;
            proxy_pass http://127.0.0.1:{backend};
        }}

        # auth_request passes only 401 and 403; tsgate answers 403 with the real status in
        # X-Tsgate-Status, and this puts it back (429 with Retry-After, 202 for a hold).
        location @tsgate_refused {{
            default_type application/problem+json;
            add_header Tsgate-Decision $tsgate_refusal always;
            add_header Cache-Control no-store always;
            if ($tsgate_status = 429) {{
                add_header Retry-After $tsgate_retry_after always;
                add_header Tsgate-Decision $tsgate_refusal always;
                return 429 '{{"type":"https://tsgate.dev/problems/ratelimit.exceeded","status":429,"decision_id":"$tsgate_refusal"}}';
            }}
            if ($tsgate_status = 202) {{
                add_header Tsgate-Decision $tsgate_refusal always;
                return 202 '{{"type":"https://tsgate.dev/problems/held","status":202,"decision_id":"$tsgate_refusal"}}';
            }}
            return 403 '{{"type":"https://tsgate.dev/problems/denied","status":403,"decision_id":"$tsgate_refusal"}}';
        }}
    }}
}}
"""


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> GatewayProc:
    body = POLICY.format(db=tmp_path / "accounts.db", spoofer=SPOOFER)
    return start_gateway(policy_text(backend.port, body, trusted='["127.0.0.1/32"]'))


@pytest.fixture
def nginx(gw: GatewayProc, backend: Backend, tmp_path: Path) -> Iterator[int]:
    if NGINX is None:
        pytest.skip("NO nginx BINARY (Debian nginx-light, scripts/bench-deps.sh): the nginx auth_request "
                    "end-to-end tests are SKIPPED")
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, dir=conf_dir, port=port, spoofer=SPOOFER, tsgate=gw.port,
                                      backend=backend.port), encoding="utf-8")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(conf_dir), "-e", str(conf_dir / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        yield port
    finally:
        stop(proc)


def request_from(source: str, port: int, method: str, path: str, headers: dict[str, str] | None = None,
                 host: str = "127.0.0.1") -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def echoed(resp: Response) -> dict[str, str]:
    assert resp.status == 200, resp.body
    return {n: v for n, v in resp.json()["headers"]}


def assertion_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def log_line(gw: GatewayProc, decision_id: str) -> dict[str, object]:
    """The decision log line of one decision (written just after the answer: poll briefly)."""
    deadline = time.monotonic() + 5
    while True:
        found = [e for e in gw.log_lines() if e.get("decision_id") == decision_id]
        if found or time.monotonic() > deadline:
            assert found, f"no decision log line for {decision_id}"
            return found[0]
        time.sleep(0.05)


def token_for(gw: GatewayProc, username: str = "alice") -> str:
    assert register(gw, username).status == 201
    resp = login(gw, username)
    assert resp.status == 200, resp.body
    return str(resp.json()["access_token"])


# -- nginx auth_request, the real nginx ---------------------------------------------------------------
def test_nginx_allowed_request_reaches_backend_with_identity(gw: GatewayProc, nginx: int) -> None:
    """Through nginx: a token holder reaches the backend with X-Tsgate-User/-Roles and an assertion
    bound to the decision id; a spoofed X-Tsgate-User from the client never arrives."""
    token = token_for(gw)
    seen = echoed(request(nginx, "GET", "/api/debug/echo/private/x",
                          headers={**bearer(token), "X-Tsgate-User": "mallory", "X-Tsgate-Roles": "admin"}))
    assert seen["x-tsgate-user"] == "alice" and seen["x-tsgate-roles"] == "user"
    assert assertion_claims(seen["x-tsgate-assertion"])["did"] == seen["x-tsgate-decision"]
    anonymous = echoed(request(nginx, "GET", "/api/debug/echo/open", headers={"X-Tsgate-User": "mallory"}))
    assert "x-tsgate-user" not in anonymous and "x-tsgate-roles" not in anonymous
    line = log_line(gw, seen["x-tsgate-decision"])
    assert line["rule"] == "private" and line["principal"] and line["status"] == 200


def test_nginx_required_route_without_token_is_401(gw: GatewayProc, nginx: int) -> None:
    """auth: required is a 401 with the Bearer challenge through nginx; the backend sees nothing."""
    resp = request(nginx, "GET", "/api/debug/echo/private/x")
    assert resp.status == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_nginx_rate_limited_request_is_refused_with_429(gw: GatewayProc, nginx: int) -> None:
    """The third request in a minute is refused by nginx as 429 with Retry-After and the decision
    id (tsgate's 403 + X-Tsgate-Status mapped back by the documented error_page)."""
    statuses = [request(nginx, "GET", "/api/debug/echo/limited/x").status for _ in range(2)]
    assert statuses == [200, 200]
    refused = request(nginx, "GET", "/api/debug/echo/limited/x")
    assert refused.status == 429, refused.body
    assert int(refused.headers["retry-after"]) > 0
    body = refused.json()
    assert body["decision_id"] == refused.headers["tsgate-decision"] and body["decision_id"]
    line = log_line(gw, body["decision_id"])
    assert line["decision"] == "deny" and line["status"] == 429 and line["rule"] == "limited"


def test_nginx_denied_ip_is_refused(gw: GatewayProc, nginx: int) -> None:
    """A client from a denied address is refused through nginx: tsgate resolves it from nginx's
    X-Forwarded-For because nginx (127.0.0.1) is a trusted proxy."""
    assert request_from("127.0.0.1", nginx, "GET", "/api/debug/echo/open").status == 200
    refused = request_from(SPOOFER, nginx, "GET", "/api/debug/echo/open")
    assert refused.status == 403
    line = log_line(gw, refused.json()["decision_id"])
    assert line["reason"] == "ip.denied" and line["client_ip"] == SPOOFER


# -- Traefik forwardAuth and Envoy ext_authz, over sockets ------------------------------------------
def traefik(gw: GatewayProc, method: str, uri: str, headers: dict[str, str] | None = None,
            client: str = "198.51.100.7") -> Response:
    return request(gw.port, "GET", "/_tsgate/decide/traefik", headers={
        "X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "X-Forwarded-Host": "app.example",
        "X-Forwarded-Proto": "https", "X-Forwarded-For": client, **(headers or {})})


def test_traefik_allows_with_identity_headers(gw: GatewayProc) -> None:
    """forwardAuth: 200 with the identity headers to copy (authResponseHeaders) for a token holder."""
    token = token_for(gw)
    resp = traefik(gw, "POST", "/api/debug/echo/private/x?a=1", bearer(token))
    assert resp.status == 200 and resp.body == b""
    assert resp.headers["x-tsgate-user"] == "alice" and resp.headers["x-tsgate-roles"] == "user"
    assert assertion_claims(resp.headers["x-tsgate-assertion"])["did"] == resp.headers["x-tsgate-decision"]
    line = log_line(gw, resp.headers["x-tsgate-decision"])
    assert line["method"] == "POST" and line["path"] == "/api/debug/echo/private/x"
    assert line["client_ip"] == "198.51.100.7"


def test_traefik_passes_refusals_through(gw: GatewayProc) -> None:
    """401 for a missing token and 429 + Retry-After past the limit, keyed by the client in
    X-Forwarded-For, each a problem+json answer Traefik hands to the client."""
    assert traefik(gw, "GET", "/api/debug/echo/private/x").status == 401
    for _ in range(2):
        assert traefik(gw, "GET", "/api/debug/echo/limited/y", client="198.51.100.8").status == 200
    refused = traefik(gw, "GET", "/api/debug/echo/limited/y", client="198.51.100.8")
    assert refused.status == 429 and refused.headers["x-tsgate-status"] == "429"
    assert refused.headers["content-type"] == "application/problem+json" and "retry-after" in refused.headers
    assert refused.json()["reason"] == "ratelimit.exceeded"
    assert traefik(gw, "GET", "/api/debug/echo/limited/y", client="198.51.100.9").status == 200


def test_traefik_missing_original_headers_is_400_problem(gw: GatewayProc) -> None:
    """A forwardAuth subrequest without X-Forwarded-Method/-Uri is a misconfiguration: 400 problem."""
    resp = request(gw.port, "GET", "/_tsgate/decide/traefik")
    assert resp.status == 400 and resp.json()["reason"] == "decide.bad_subrequest"


def test_envoy_decides_the_appended_path_like_the_proxy(gw: GatewayProc) -> None:
    """ext_authz HTTP: the original path follows the prefix, with the request's own method; the
    proxy's canonicalization decides (an encoded name lands on the private rule, dot segments are
    refused), answer for answer the same as the proxy."""
    token = token_for(gw)
    ok = request(gw.port, "DELETE", "/_tsgate/decide/envoy/api/debug/echo/private/x?q=1", headers=bearer(token))
    assert ok.status == 200 and ok.headers["x-tsgate-user"] == "alice"
    for sneaky, status, reason in (("/api/debug/echo/%70rivate/x", 401, "auth.required"),
                                   ("/api/debug/echo/open/%2e%2e/private/x", 400, "path.dot_segment")):
        via_envoy = request(gw.port, "GET", "/_tsgate/decide/envoy" + sneaky)
        via_proxy = request(gw.port, "GET", sneaky)
        assert via_envoy.status == via_proxy.status == status, sneaky
        assert via_envoy.json()["reason"] == via_proxy.json()["reason"] == reason


def test_body_reading_guards_get_the_body_or_fail_closed(gw: GatewayProc) -> None:
    """Moderation reads the body: sent with the check (Traefik forwardBody, Envoy with_request_body)
    spam is held (Envoy passes the 202; Traefik would read a 2xx as allow, so it gets 403 with
    X-Tsgate-Status 202) and clean text is allowed; without the body the request is refused, not
    waved through."""
    spam = json.dumps({"body": SPAM}).encode()
    clean = json.dumps({"body": CLEAN}).encode()
    json_type = {"Content-Type": "application/json"}
    held = request(gw.port, "POST", "/_tsgate/decide/envoy/api/debug/echo/comments", body=spam, headers=json_type)
    assert held.status == 202 and held.headers["tsgate-mitigated"] == "hold"
    ok = request(gw.port, "POST", "/_tsgate/decide/envoy/api/debug/echo/comments", body=clean, headers=json_type)
    assert ok.status == 200, ok.body
    via_traefik = request(gw.port, "POST", "/_tsgate/decide/traefik", body=spam, headers={
        **json_type, "X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/api/debug/echo/comments",
        "X-Forwarded-For": "198.51.100.20"})
    assert via_traefik.status == 403 and via_traefik.headers["x-tsgate-status"] == "202"
    assert via_traefik.json()["status"] == 202
    blind = traefik(gw, "POST", "/api/debug/echo/comments", json_type)
    assert blind.status == 403 and blind.json()["reason"] == "decide.body_unavailable"
    line = log_line(gw, blind.json()["decision_id"])
    assert line["decision"] == "deny" and line["reason"] == "decide.body_unavailable" and line["rule"] == "comments"


def test_decision_endpoints_refuse_untrusted_peers(gw: GatewayProc) -> None:
    """Only trusted proxies may ask: from 127.0.0.2 every decision endpoint is 403 problem+json,
    whatever headers claim."""
    for path in ("/_tsgate/decide/nginx", "/_tsgate/decide/traefik", "/_tsgate/decide/envoy/api/x",
                 "/_tsgate/decide/haproxy"):
        resp = request_from(SPOOFER, gw.port, "GET", path, headers={
            "X-Original-Method": "GET", "X-Original-URI": "/", "X-Forwarded-For": "127.0.0.1"})
        assert resp.status == 403, path
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["reason"] == "decide.untrusted_peer"


def test_unknown_decision_flavor_is_404(gw: GatewayProc) -> None:
    """decide/<unknown> and decide/nginx/extra are 404 problem+json, never routed to the backend."""
    for path in ("/_tsgate/decide/haproxy", "/_tsgate/decide/nginx/extra", "/_tsgate/decide/envoyx"):
        resp = request(gw.port, "GET", path)
        assert resp.status == 404 and resp.json()["reason"] == "decide.not_found", path


@pytest.mark.parametrize(("flavor", "status", "answered"), [
    ("nginx", 401, 401), ("nginx", 403, 403), ("nginx", 429, 403), ("nginx", 202, 403), ("nginx", 400, 403),
    ("traefik", 202, 403), ("traefik", 429, 429), ("traefik", 401, 401),
    ("envoy", 202, 202), ("envoy", 429, 429),
])
def test_refusal_status_mapping(flavor: Flavor, status: int, answered: int) -> None:
    """nginx only passes 401/403; nginx and Traefik read any 2xx (a hold) as allow: those map to 403."""
    assert _answered_status(flavor, status) == answered
