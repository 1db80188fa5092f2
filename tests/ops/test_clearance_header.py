"""``Tsgate-Clearance`` is tsgate's credential (a CAPTCHA clearance): it never reaches the
upstream, whether the request was challenged or not. SECURITY.md class 3/7: a backend (or
whoever reads its logs) must not get a token that passes tsgate's challenges."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import altcha

from tests.conftest import Backend, GatewayProc, Response, policy_text, request

POLICY = """
database: "sqlite+aiosqlite:///{db}"
captcha:
  levels: [{{cost: 10, counter: 20}}, {{cost: 20, counter: 30}}]
  default_level: 1
  cookie: {{secure: false}}
routes:
  - id: guarded
    match: {{path: "/api/debug/echo/guarded/**"}}
    captcha: {{always: true, uses: 5}}
  - id: limited
    match: {{path: "/api/debug/echo/limited/**"}}
    limits: [{{name: burst, rate: "5/minute", key: ip, on_exceed: challenge}}]
  - id: any
    match: {{path: "/**"}}
"""


def _upstream_headers(answer: Response) -> dict[str, str]:
    assert answer.status == 200, answer.body
    return {name.lower(): value for name, value in answer.json()["headers"]}


def _clearance(gw: GatewayProc) -> str:
    challenged = gw.get("/api/debug/echo/guarded/x")
    assert challenged.status == 403, challenged.body
    fetched = gw.get(challenged.json()["challenge"]["url"])
    challenge = altcha.Challenge.from_dict(fetched.json())
    solution = altcha.solve_challenge(challenge, timeout=20)
    assert solution is not None
    payload = altcha.Payload(challenge, solution).to_base64()
    verified = request(gw.port, "POST", "/_tsgate/captcha/verify", body=json.dumps({"altcha": payload}).encode(),
                       headers={"Content-Type": "application/json"})
    assert verified.status == 200, verified.body
    return str(verified.json()["clearance"])


def test_clearance_header_is_never_forwarded(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                             tmp_path: Path) -> None:
    """A valid clearance, on a challenged route (where it is used), on a route whose challenge
    did not trigger, and on a route without CAPTCHA; and a forged one: the backend sees none of
    them (other headers pass), in every spelling of the header name."""
    gw = start_gateway(policy_text(backend.port, POLICY.format(db=tmp_path / "accounts.db")))
    token = _clearance(gw)
    cases = [("/api/debug/echo/guarded/x", "Tsgate-Clearance", token),
             ("/api/debug/echo/limited/x", "Tsgate-Clearance", token),
             ("/api/debug/echo/plain/x", "Tsgate-Clearance", token),
             ("/api/debug/echo/plain/x", "TSGATE-CLEARANCE", "forged." + token[:20]),
             ("/api/debug/echo/limited/x", "tsgate-clearance", "not-a-clearance")]
    for path, name, value in cases:
        seen = _upstream_headers(gw.get(path, headers={name: value, "X-Other": "kept"}))
        assert "tsgate-clearance" not in seen, (path, name)
        assert seen.get("x-other") == "kept"
