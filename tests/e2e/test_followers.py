"""Fake-follower detection end to end: a `tsgate run` process in front of the demo backend sees
organic follows from 300 old accounts, then a scripted order: 30 young accounts on one network
follow the same 5 bought-for targets within a minute. The detectors label the fakes (their next
follow is refused), and the review queue gets one item for the cohort and a flag per target."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import jwt

from tests.conftest import Backend, GatewayProc, policy_text, request

SECRET = "backend-shared-secret-0123456789abcdef"
ROUTES = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
  external:
    - {{name: backend, scheme: Token, algorithms: [HS256], secret_env: TEST_BACKEND_SECRET, issuer: backend}}
followers: {{on_label: deny, challenge_at: null}}
routes:
  - id: follow
    match: {{methods: [POST], path: "/api/debug/echo/users/{{username}}/follow"}}
    auth: required
    follow: {{target: "path:username"}}
  - id: any
    match: {{path: "/**"}}
"""


def token(sub: str, created: float) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iss": "backend", "iat": now, "exp": now + 3600, "created_at": int(created)},
                      SECRET, algorithm="HS256")


def follow(gw: GatewayProc, who: str, created: float, target: str, ip: str, ua: str) -> int:
    return request(gw.port, "POST", f"/api/debug/echo/users/{target}/follow",
                   headers={"Authorization": f"Token {token(who, created)}", "X-Forwarded-For": ip,
                            "User-Agent": ua}).status


def test_a_scripted_follow_order_is_one_cohort_in_review_and_flags_its_targets(
        backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    gw = start_gateway(policy_text(backend.port, ROUTES.format(db=db), trusted='["127.0.0.1/32"]'),
                       extra_env={"TEST_BACKEND_SECRET": SECRET})
    rng = random.Random(7)
    now = time.time()
    targets = [f"creator{i}" for i in range(400)]
    weights = [1 / (i + 1) for i in range(len(targets))]  # popularity falls off like a power law
    browsers = [f"Mozilla/5.0 (organic {i})" for i in range(40)]
    for i in range(300):  # organic: old accounts, spread over networks and browsers, 3 follows each
        created = now - rng.uniform(200, 2000) * 86400
        for target in rng.choices(targets[:300], weights[:300], k=3):
            assert follow(gw, f"person{i}", created, target, f"198.{i % 200}.{i // 200}.{rng.randint(2, 250)}",
                          rng.choice(browsers)) == 200
    bought = [f"shop{i}" for i in range(5)]
    order = []
    for i in range(30):  # the order: young accounts, one /24, one client build, the same 5 targets
        for target in bought:
            order.append(follow(gw, f"fake{i}", now - 3 * 3600, target, f"203.0.113.{10 + i}", "panel-bot/2.1"))
    assert set(order) <= {200, 403}
    first_refusal = order.index(403)  # detected while the order was still being delivered
    assert 25 <= first_refusal < 150, order

    again = follow(gw, "fake3", now - 3 * 3600, "creator1", "203.0.113.13", "panel-bot/2.1")
    assert again == 403  # labelled: the account's follows are refused while it is reviewed
    assert follow(gw, "person5", now - 900 * 86400, "creator1", "198.5.0.9", browsers[0]) == 200
    gw.proc.terminate()  # a clean stop writes cohorts still settling
    gw.proc.wait(15)

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM review_items WHERE kind = 'follow'")]
    cohorts = [r for r in rows if r["principal_kind"] == "cohort"]
    assert len(cohorts) == 1, rows
    accounts = set(json.loads(str(cohorts[0]["content"]))["accounts"])
    assert len(accounts & {f"ext:backend:fake{i}" for i in range(30)}) >= 10  # ids as the authenticator names them
    assert not accounts & {f"ext:backend:person{i}" for i in range(300)}
    flagged_targets = {str(r["principal_id"]) for r in rows if r["principal_kind"] == "target"}
    assert flagged_targets and flagged_targets <= set(bought), rows  # "suspected purchased followers"
    assert all(r["state"] == "open" and r["action"] == "flag" for r in rows)
