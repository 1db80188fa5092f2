"""CAPTCHA end to end: a `tsgate run` process in front of the demo backend, challenges solved by
a real ALTCHA solver (altcha.solve_challenge) over real sockets. SECURITY.md class 7: replayed
solutions, clearances on another principal or route, tampered clearances, brute force."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import altcha
import pytest

from tests.conftest import Backend, GatewayProc, Response, policy_text, request

PASSWORD = "violet tangerine orbit forty-two"
LOW_LEVELS = "[{{cost: 10, counter: 20}}, {{cost: 20, counter: 30}}, {{cost: 30, counter: 40}}]"

CAPTCHA_POLICY = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
  login: {{challenge_after: 3, lock_after: 30, lock_for: 60s, stuffing_distinct_logins: 50}}
captcha:
  levels: """ + LOW_LEVELS + """
  default_level: 1
  challenge_ttl: 60s
  cookie: {{secure: false}}
  escalate: {{strikes: 50, window: 60s}}
  issue_per_minute: 500
  verify_per_minute: {verify_per_minute}
routes:
  - id: login
    match: {{methods: [POST], path: "/_tsgate/auth/login"}}
    captcha: {{after_failures: 3}}
  - id: guarded
    match: {{path: "/api/debug/echo/guarded/**"}}
    captcha: {{always: true, uses: 3}}
  - id: other
    match: {{path: "/api/debug/echo/other/**"}}
    captcha: always
  - id: limited
    match: {{path: "/api/debug/echo/limited/**"}}
    limits: [{{name: burst, rate: "2/minute", key: ip, on_exceed: challenge}}]
  - id: soft
    match: {{path: "/api/debug/echo/soft/**"}}
    limits: [{{name: soft-limit, rate: "1/minute", key: ip, on_exceed: shadow}}]
    captcha: {{on_limit: soft-limit, level: 2}}
  - id: any
    match: {{path: "/**"}}
"""


def start(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path,
          verify_per_minute: int = 500) -> GatewayProc:
    text = CAPTCHA_POLICY.format(db=tmp_path / "accounts.db", verify_per_minute=verify_per_minute)
    return start_gateway(policy_text(backend.port, text))


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> GatewayProc:
    return start(backend, start_gateway, tmp_path)


def post_json(gw: GatewayProc, path: str, body: Any, headers: dict[str, str] | None = None) -> Response:
    return request(gw.port, "POST", path, body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json", **(headers or {})})


def solved_payload(gw: GatewayProc, url: str, headers: dict[str, str] | None = None) -> str:
    fetched = gw.get(url, headers=headers)
    assert fetched.status == 200, fetched.body
    challenge = altcha.Challenge.from_dict(fetched.json())
    solution = altcha.solve_challenge(challenge, timeout=20)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()


def clearance_for(gw: GatewayProc, url: str, headers: dict[str, str] | None = None) -> Response:
    verified = post_json(gw, "/_tsgate/captcha/verify", {"altcha": solved_payload(gw, url, headers)}, headers)
    assert verified.status == 200, verified.body
    return verified


def challenge_of(resp: Response) -> dict[str, Any]:
    assert resp.status == 403, resp.body
    assert resp.headers["tsgate-mitigated"] == "challenge"
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["decision_id"] == resp.headers["tsgate-decision"]
    challenge: dict[str, Any] = body["challenge"]
    return challenge


def echoed(resp: Response) -> dict[str, str]:
    assert resp.status == 200, resp.body
    return {n: v for n, v in resp.json()["headers"]}


def test_full_flow_challenge_solve_clear_forward(gw: GatewayProc) -> None:
    """Challenged → fetch → solve → verify → the retry with Tsgate-Clearance reaches the backend,
    without the clearance header."""
    first = gw.get("/api/debug/echo/guarded/x")
    challenge = challenge_of(first)
    assert challenge["level"] == 1 and challenge["url"] == "/_tsgate/captcha/challenge?scope=guarded&level=1"
    verified = clearance_for(gw, challenge["url"]).json()
    assert verified["scope"] == "guarded" and verified["level"] == 1 and verified["uses"] == 3
    assert verified["header"] == "Tsgate-Clearance"
    passed = gw.get("/api/debug/echo/guarded/x", headers={"Tsgate-Clearance": verified["clearance"]})
    upstream = echoed(passed)
    assert upstream["x-tsgate-decision"] == passed.headers["tsgate-decision"]
    assert "tsgate-clearance" not in upstream  # tsgate's credential stays with tsgate


def test_clearance_cookie_is_hardened_and_accepted(gw: GatewayProc) -> None:
    """The verify answer sets an HttpOnly SameSite cookie per scope, and the cookie alone clears."""
    url = challenge_of(gw.get("/api/debug/echo/guarded/x"))["url"]
    verified = clearance_for(gw, url)
    cookie = verified.headers["set-cookie"]
    assert cookie.startswith("tsgate_clearance_guarded=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    pair = cookie.split(";")[0]
    assert gw.get("/api/debug/echo/guarded/y", headers={"Cookie": f"other=1; {pair}"}).status == 200


def test_solution_is_accepted_once(gw: GatewayProc) -> None:
    """Posting the same solved payload twice: the second is captcha.replayed."""
    payload = solved_payload(gw, "/_tsgate/captcha/challenge?scope=guarded&level=1")
    assert post_json(gw, "/_tsgate/captcha/verify", {"altcha": payload}).status == 200
    again = post_json(gw, "/_tsgate/captcha/verify", {"altcha": payload})
    assert again.status == 403 and again.json()["reason"] == "captcha.replayed"


def test_spliced_parameters_are_refused(gw: GatewayProc) -> None:
    """Changing the salt, expiry, scope or level of a solved challenge breaks its signature."""
    payload = json.loads(__import__("base64").b64decode(solved_payload(gw, "/_tsgate/captcha/challenge?scope=other")))
    edits = [("salt", "00" * 16), ("expiresAt", payload["challenge"]["parameters"]["expiresAt"] + 3600),
             ("data", {**payload["challenge"]["parameters"]["data"], "s": "guarded"}),
             ("data", {**payload["challenge"]["parameters"]["data"], "l": 3})]
    for field, value in edits:
        spliced = json.loads(json.dumps(payload))
        spliced["challenge"]["parameters"][field] = value
        resp = post_json(gw, "/_tsgate/captcha/verify", spliced)
        assert resp.status == 403 and resp.json()["reason"] == "captcha.invalid", field


def test_clearance_bound_to_principal_and_scope(gw: GatewayProc) -> None:
    """A clearance does not work for another User-Agent (another principal) or another rule."""
    me = {"User-Agent": "browser-a"}
    url = challenge_of(gw.get("/api/debug/echo/guarded/x", headers=me))["url"]
    token = clearance_for(gw, url, me).json()["clearance"]
    assert gw.get("/api/debug/echo/guarded/x", headers={**me, "Tsgate-Clearance": token}).status == 200
    stolen = gw.get("/api/debug/echo/guarded/x", headers={"User-Agent": "bot-b", "Tsgate-Clearance": token})
    assert stolen.status == 403 and challenge_of(stolen)
    other_route = gw.get("/api/debug/echo/other/x", headers={**me, "Tsgate-Clearance": token})
    assert challenge_of(other_route)["url"].endswith("scope=other&level=1")


def test_tampered_clearance_is_refused(gw: GatewayProc) -> None:
    """Every single-character change of a clearance (and a truncation) is refused."""
    token = clearance_for(gw, "/_tsgate/captcha/challenge?scope=guarded").json()["clearance"]
    variants = [token[:-1], token + "A", token[:10] + ("A" if token[10] != "A" else "B") + token[11:],
                token[:-3] + ("x" if token[-3] != "x" else "y") + token[-2:], "c1.unknown." + "A" * 60]
    for bad in variants:
        assert gw.get("/api/debug/echo/guarded/x", headers={"Tsgate-Clearance": bad}).status == 403


def test_use_budget_is_spent(gw: GatewayProc) -> None:
    """uses: 3 — three requests pass on one clearance, the fourth is challenged again."""
    token = clearance_for(gw, "/_tsgate/captcha/challenge?scope=guarded").json()["clearance"]
    statuses = [gw.get("/api/debug/echo/guarded/x", headers={"Tsgate-Clearance": token}).status for _ in range(4)]
    assert statuses == [200, 200, 200, 403]


def test_limit_with_on_exceed_challenge_is_satisfied_by_a_clearance(gw: GatewayProc) -> None:
    """A limit with on_exceed: challenge challenges past its budget; a clearance lets the client on
    (and the limit's RateLimit headers still come with the challenge)."""
    statuses = [gw.get("/api/debug/echo/limited/x").status for _ in range(2)]
    assert statuses == [200, 200]
    limited = gw.get("/api/debug/echo/limited/x")
    challenge = challenge_of(limited)
    assert limited.json()["reason"] == "ratelimit.exceeded" and "retry-after" in limited.headers
    token = clearance_for(gw, challenge["url"]).json()["clearance"]
    assert gw.get("/api/debug/echo/limited/x", headers={"Tsgate-Clearance": token}).status == 200


def test_on_limit_trigger_challenges_past_a_shadow_limit(gw: GatewayProc) -> None:
    """captcha: {on_limit: soft-limit} challenges once the shadow limit is exceeded, at level 2; a
    level-1 clearance is not enough, a level-2 one is."""
    assert gw.get("/api/debug/echo/soft/x").status == 200
    challenge = challenge_of(gw.get("/api/debug/echo/soft/x"))
    assert challenge["level"] == 2
    low = clearance_for(gw, "/_tsgate/captcha/challenge?scope=soft&level=1").json()["clearance"]
    assert gw.get("/api/debug/echo/soft/x", headers={"Tsgate-Clearance": low}).status == 403
    high = clearance_for(gw, challenge["url"]).json()["clearance"]
    assert gw.get("/api/debug/echo/soft/x", headers={"Tsgate-Clearance": high}).status == 200


def login(gw: GatewayProc, password: str, headers: dict[str, str] | None = None) -> Response:
    return post_json(gw, "/_tsgate/auth/login", {"login": "alice", "password": password}, headers)


def test_login_challenged_after_failures_then_passes_once_cleared(gw: GatewayProc) -> None:
    """Three failed logins, then the login route is challenged (even with the right password);
    with a clearance for the login scope the right password signs in."""
    created = post_json(gw, "/_tsgate/auth/register",
                        {"username": "alice", "email": "alice@example.org", "password": PASSWORD})
    assert created.status == 201
    assert [login(gw, "wrong password but long enough").status for _ in range(3)] == [401, 401, 401]
    challenged = login(gw, PASSWORD)
    challenge = challenge_of(challenged)
    assert challenge["url"] == "/_tsgate/captcha/challenge?scope=login&level=1"
    token = clearance_for(gw, challenge["url"]).json()["clearance"]
    signed_in = login(gw, PASSWORD, {"Tsgate-Clearance": token})
    assert signed_in.status == 200 and signed_in.json()["token_type"] == "Bearer"


def test_interstitial_page_for_browsers(gw: GatewayProc) -> None:
    """A browser gets an HTML page with a strict CSP, no inline script, its assets served by tsgate,
    a <noscript> explanation; a POST is told to resubmit instead of being retried."""
    page = gw.get("/api/debug/echo/guarded/x", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status == 403 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["tsgate-mitigated"] == "challenge"
    html = page.body.decode()
    assert "<noscript>" in html and 'data-retry="get"' in html
    assert re.search(r"<script>", html) is None and "style=" not in html and "onclick" not in html
    assert 'data-challenge-url="/_tsgate/captcha/challenge?scope=guarded&amp;level=1"' in html
    for src in re.findall(r'(?:src|href)="(/_tsgate/captcha/[^"]+)"', html):
        asset = gw.get(src)
        assert asset.status == 200 and asset.headers["x-content-type-options"] == "nosniff", src
    assert "crypto.subtle" in gw.get("/_tsgate/captcha/worker.js").body.decode()
    post = request(gw.port, "POST", "/api/debug/echo/guarded/x", body=b"a=1",
                   headers={"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"})
    assert post.status == 403 and b"was not sent" in post.body and b'data-retry="no"' in post.body


def test_bad_inputs_are_clear_4xx_problems(gw: GatewayProc) -> None:
    """Malformed verify bodies and challenge queries get 4xx problem+json with a reason, never 500."""
    verify = "/_tsgate/captcha/verify"
    cases = [
        (request(gw.port, "POST", verify, body=b"{nope", headers={"Content-Type": "application/json"}),
         "request.bad_json"),
        (post_json(gw, verify, [1, 2]), "request.bad_json"),
        (post_json(gw, verify, {"altcha": "!!!not base64"}), "captcha.malformed"),
        (post_json(gw, verify, {"altcha": "eyJhIjoxfQ=="}), "captcha.malformed"),
        (post_json(gw, verify, {"challenge": {"parameters": [], "signature": 1}, "solution": {}}), "captcha.malformed"),
        (post_json(gw, verify, {"altcha": 12}), "captcha.malformed"),
        (post_json(gw, verify, {"provider": "turnstile", "response": "x"}), "captcha.unknown_provider"),
        (request(gw.port, "POST", verify, body=b"altcha=%ZZ", headers={
            "Content-Type": "application/x-www-form-urlencoded"}), "captcha.malformed"),
        (request(gw.port, "POST", verify, body=b"x", headers={"Content-Type": "text/plain"}),
         "request.unsupported_media_type"),
        (request(gw.port, "POST", verify, body=b"x" * 20000, headers={"Content-Type": "application/json"}),
         "request.body_too_large"),
        (gw.get(verify), "request.method_not_allowed"),
        (gw.get("/_tsgate/captcha/challenge?scope=nope"), "captcha.unknown_scope"),
        (gw.get("/_tsgate/captcha/challenge?scope=guarded&level=9"), "captcha.bad_level"),
        (gw.get("/_tsgate/captcha/challenge?scope=guarded&level=-1"), "captcha.bad_level"),
        (gw.get("/_tsgate/captcha/nothing"), "internal.not_found"),
    ]
    for resp, reason in cases:
        assert 400 <= resp.status < 500, (reason, resp.status, resp.body)
        assert resp.headers["content-type"] == "application/problem+json"
        body = resp.json()
        assert body["reason"] == reason and body["decision_id"] == resp.headers["tsgate-decision"]


def test_verify_brute_force_is_budgeted(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                        tmp_path: Path) -> None:
    """Guessing solutions hits a per-IP verify budget: 429 with Retry-After, not endless tries."""
    gw = start(backend, start_gateway, tmp_path, verify_per_minute=5)
    payload = solved_payload(gw, "/_tsgate/captcha/challenge?scope=guarded")
    doc = json.loads(__import__("base64").b64decode(payload))
    statuses = []
    for guess in range(7):
        doc["solution"]["derivedKey"] = f"{guess:064x}"
        statuses.append(post_json(gw, "/_tsgate/captcha/verify", doc).status)
    assert statuses[:5] == [403] * 5 and statuses[5:] == [429, 429]


def test_metrics_count_challenges_and_clearances(gw: GatewayProc) -> None:
    """tsgate_captcha_* counters and the solve-time histogram are exported on /metrics."""
    token = clearance_for(gw, "/_tsgate/captcha/challenge?scope=guarded").json()["clearance"]
    assert gw.get("/api/debug/echo/guarded/x", headers={"Tsgate-Clearance": token}).status == 200
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_captcha_challenges_total{level="1",outcome="issued",rule="guarded"} 1.0' in metrics
    assert 'tsgate_captcha_challenges_total{level="1",outcome="solved",rule="guarded"} 1.0' in metrics
    assert 'tsgate_captcha_clearances_total{result="accepted",rule="guarded"} 1.0' in metrics
    assert 'tsgate_captcha_solve_seconds_count{level="1"} 1.0' in metrics
