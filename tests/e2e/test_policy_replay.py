"""Policy operations end to end: traffic through a real gateway in front of the demo backend is
recorded in the decision log; `tsgate policy replay` of that log under the *same* policy
reproduces every decision (the honesty check), and under a changed limit shows exactly the
expected diff."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Backend, GatewayProc, policy_text, request
from tests.e2e.test_identity import PASSWORD, bearer, login, post_json, register

ROUTES = """
database: "sqlite+aiosqlite:///{db}"
log: {{decision_log: "{log}", replay_headers: [user-agent, x-client]}}
auth:
  refresh_cookie: {{secure: false}}
routes:
  - id: limited
    match: {{path: "/api/debug/echo/limited/**"}}
    limits:
      - {{name: per-ip, rate: "{rate}", key: ip}}
  - id: per-client
    match: {{path: "/api/debug/echo/client/**"}}
    limits:
      - {{name: per-client-header, rate: "2/minute", key: "header:x-client"}}
  - id: private
    match: {{path: "/api/debug/echo/private/**"}}
    auth: required
    roles: [admin]
  - id: shadowed
    match: {{path: "/api/debug/echo/shadow/**"}}
    mode: shadow
    ip: {{deny: ["127.0.0.0/8"]}}
  - id: any
    match: {{path: "/**"}}
"""


def tsgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_replay_reproduces_recorded_decisions_and_diffs_a_changed_limit(
        backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    text = policy_text(backend.port, ROUTES.format(db=tmp_path / "a.db", log=log, rate="3/minute"))
    gw = start_gateway(text)
    statuses = [gw.get("/api/debug/echo/limited/x").status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    client_statuses = [gw.get("/api/debug/echo/client/x", headers={"X-Client": c}).status
                       for c in ("a", "a", "a", "b")]
    assert client_statuses == [200, 200, 429, 200]
    assert gw.get("/api/debug/echo/private/x").status == 401
    register(gw)
    token = login(gw).json()["access_token"]
    assert gw.get("/api/debug/echo/private/x", headers=bearer(token)).status == 403  # a user, not an admin
    assert gw.get("/api/debug/echo/private/x", headers=bearer("not-a-token")).status == 401
    assert gw.get("/api/debug/echo/shadow/x").status == 200  # shadow: would have denied
    assert post_json(gw.port, "/_tsgate/auth/login", {"login": "alice", "password": PASSWORD + "x"}).status == 401
    gw.proc.terminate()
    gw.proc.wait(15)  # a clean stop flushes the decision log

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 15
    policy_file = tmp_path / "same.yaml"
    policy_file.write_text(text)
    same = tsgate("policy", "replay", "--policy", str(policy_file), "--log", str(log), "--json")
    assert same.returncode == 0, same.stderr
    report = json.loads(same.stdout)
    assert report["changed"] == 0, report["changes"]
    assert report["replayed"] == len(records) and report["unchanged"] == len(records)

    looser = tmp_path / "looser.yaml"
    looser.write_text(text.replace('rate: "3/minute"', 'rate: "4/minute"'))
    diff = json.loads(tsgate("policy", "replay", "--policy", str(looser), "--log", str(log), "--json").stdout)
    assert diff["changed"] == 1 and diff["by_kind"] == {"newly_allowed": 1}
    (row,) = diff["changes"]
    assert (row["rule"], row["before"], row["after"]) == ("limited", "deny:ratelimit.exceeded", "allow")

    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(text.replace('rate: "3/minute"', 'rate: "1/minute"').replace("mode: shadow", "mode: enforce"))
    diff = json.loads(tsgate("policy", "replay", "--policy", str(stricter), "--log", str(log), "--json").stdout)
    assert diff["by_kind"] == {"newly_denied": 3}  # 2 more limited, the shadow rule now refuses
    kinds = {(r["rule"], r["after"]): r["count"] for r in diff["changes"]}
    assert kinds == {("limited", "deny:ratelimit.exceeded"): 2, ("shadowed", "deny:ip.denied"): 1}
    human = tsgate("policy", "replay", "--policy", str(stricter), "--log", str(log))
    assert "newly_denied x2: rule limited /api/debug/echo/limited/x" in human.stdout


def test_decision_records_never_hold_credentials(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                                 tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    gw = start_gateway(policy_text(backend.port, ROUTES.format(db=tmp_path / "b.db", log=log, rate="9/minute")))
    response = request(gw.port, "GET", "/api/debug/echo/client/x",
                       headers={"Authorization": "Bearer secret-token-value", "Cookie": "sid=secret-cookie",
                                "X-Client": "c1", "User-Agent": "replay-test"})
    assert response.status == 401  # a bad bearer token on an optional route
    gw.proc.terminate()
    gw.proc.wait(15)
    text = log.read_text()
    assert "secret-token-value" not in text and "secret-cookie" not in text
    (record,) = [json.loads(line) for line in text.splitlines() if '"/api/debug/echo/client/x"' in line]
    assert record["headers"] == {"user-agent": "replay-test", "x-client": "c1"}
    assert record["credential"] == "invalid"
