"""Fake-follower detection end to end: a `tsgate run` process in front of the demo backend sees
organic follows from 300 old accounts, then a scripted order: 30 young accounts on one network
follow the same 5 bought-for targets within a minute. The detectors label the fakes (their next
follow is refused), and the review queue gets one item for the cohort and a flag per target."""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from tests.conftest import ADMIN_TOKEN, Backend, GatewayProc, policy_text, redis_url, request

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
    metrics = request(gw.admin_port, "GET", "/metrics",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).body.decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("tsgate_followers_")}
    assert samples['tsgate_followers_follows_total{outcome="recorded",route="follow"}'] >= 900 + first_refusal
    assert samples['tsgate_followers_follows_total{outcome="denied",route="follow"}'] >= 2
    assert samples['tsgate_followers_findings_total{kind="labels"}'] >= 10
    assert samples['tsgate_followers_detector_state{kind="events"}'] >= 900 + first_refusal
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


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_two_gateways_on_redis_detect_one_order_split_between_them(
        backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> None:
    """Each gateway's detectors read the shared Redis Stream, so an order whose follows are spread
    over two gateways is still one cohort, written once, and the labels refuse on both."""
    db = tmp_path / "queue.db"
    state = f"{redis_url()}?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    text = policy_text(backend.port, ROUTES.format(db=db), trusted='["127.0.0.1/32"]', state=state)
    gateways = [start_gateway(text, extra_env={"TEST_BACKEND_SECRET": SECRET}) for _ in range(2)]
    rng = random.Random(11)
    now = time.time()
    targets = [f"creator{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(len(targets))]
    n = 0
    for i in range(300):
        created = now - rng.uniform(200, 2000) * 86400
        for target in rng.choices(targets, weights, k=3):
            n += 1
            follow(gateways[n % 2], f"person{i}", created, target, f"198.{i % 200}.{i // 200}.9", f"organic {i % 40}")
    time.sleep(1.5)  # both consumers have read the organic history
    order = []
    for i in range(30):
        for target in [f"shop{j}" for j in range(5)]:
            n += 1
            order.append(follow(gateways[n % 2], f"fake{i}", now - 3 * 3600, target, f"203.0.113.{10 + i}", "bot/2"))
        time.sleep(0.05)
    assert set(order) <= {200, 403}
    # Each gateway's consumer blocks on the shared stream (XREAD BLOCK), so it sees the other
    # gateway's follows about one round trip after they were appended: refusals start while the
    # order is still being delivered, not after it (a 0.5 s poll missed every account's window).
    assert 403 in order, order
    assert order.index(403) < 140, order
    t0 = time.monotonic()
    while follow(gateways[0], "fake29", now - 3 * 3600, "creator8", "203.0.113.39", "bot/2") != 403:
        assert time.monotonic() - t0 < 10, "the order was not detected within 10 s"
        time.sleep(0.1)
    assert [follow(gw, "fake2", now - 3 * 3600, "creator9", "203.0.113.12", "bot/2") for gw in gateways] == [403, 403]
    for gw in gateways:
        gw.proc.terminate()
        gw.proc.wait(15)
    with sqlite3.connect(db) as conn:
        cohorts = conn.execute("SELECT count(*) FROM review_items WHERE principal_kind = 'cohort'").fetchone()[0]
    assert cohorts == 1
