"""Content moderation end to end: a `tsgate run` process in front of the demo backend. A spammy
comment is held (202, not forwarded) and its review record is in the queue table before the
answer; a clean comment reaches the backend byte for byte; a campaign pasted by several
accounts is caught as near-duplicates; bad bodies get problem+json, never a 500."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Backend, GatewayProc, policy_text, request

ROUTES = """
database: "sqlite+aiosqlite:///{db}"
moderation:
  urls: {{blocked_domains: [malware.example]}}
routes:
  - id: comments
    match: {{methods: [POST], path: "/api/debug/echo/comments"}}
    moderation: {{content: [/body]}}
  - id: any
    match: {{path: "/**"}}
"""

SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
        "To claim call 09061701461. Claim code KL341. Valid 12 hours only.")
CLEAN = "Lovely photo of the lake. Are we still on for the walk on Sunday morning? I can bring coffee."


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> GatewayProc:
    # The test client is a trusted proxy, so X-Forwarded-For can play several anonymous accounts.
    gw = start_gateway(policy_text(backend.port, ROUTES.format(db=tmp_path / "queue.db"), trusted='["127.0.0.1/32"]'))
    gw.db_path = tmp_path / "queue.db"  # type: ignore[attr-defined]
    return gw


Answer = tuple[int, bytes, dict[str, str]]


def post(gw: GatewayProc, body: bytes, content_type: str = "application/json", **headers: str) -> Answer:
    response = request(gw.port, "POST", "/api/debug/echo/comments", body=body,
                       headers={"Content-Type": content_type, **headers})
    return response.status, response.body, response.headers


def review_rows(gw: GatewayProc) -> list[dict[str, object]]:
    with sqlite3.connect(gw.db_path) as db:  # type: ignore[attr-defined]
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM review_items ORDER BY created_at")]


def test_spam_is_held_and_queued_before_the_answer_clean_text_passes_unchanged(gw: GatewayProc) -> None:
    clean = json.dumps({"body": CLEAN, "extra": [1, 2, {"k": "v"}]}, separators=(", ", ": ")).encode()
    status, body, _ = post(gw, clean)
    assert status == 200
    echoed = json.loads(body)  # the backend's own view of what it received: byte for byte
    assert echoed["body_length"] == len(clean)
    assert echoed["body_sha256"] == hashlib.sha256(clean).hexdigest()

    status, body, headers = post(gw, json.dumps({"body": SPAM}).encode())
    assert status == 202
    problem = json.loads(body)
    assert problem["reason"] == "moderation.held" and headers["tsgate-mitigated"] == "hold"
    rows = review_rows(gw)  # read right after the 202: the hold was durable before it was sent
    assert len(rows) == 1
    row = rows[0]
    assert row["decision_id"] == problem["decision_id"] and row["action"] == "hold" and row["state"] == "open"
    assert row["rule_id"] == "comments"
    symbols = {s["name"] for s in json.loads(str(row["symbols"]))}
    assert "model.spam" in symbols
    assert json.loads(str(row["content"]))["fields"][0]["text"] == SPAM
    assert json.loads(str(row["request"]))["method"] == "POST"  # kept, to forward on approval


def test_a_campaign_from_several_accounts_is_a_near_duplicate(gw: GatewayProc) -> None:
    base = ("Check out my profile for exclusive offers, link in bio, dont miss it, limited spots "
            "left for this week only {}")
    reasons = []
    for i in range(5):
        text = base.format(["!!", "!", "now", "today", "ok"][i])
        status, body, _ = post(gw, json.dumps({"body": text}).encode(), **{"X-Forwarded-For": f"198.51.100.{i}"})
        reasons.append((status, json.loads(body).get("reason") if status != 200 else None))
    time.sleep(0.3)  # flags are written after the response
    rows = review_rows(gw)
    campaign = [r for r in rows if "campaign.near_duplicate" in str(r["symbols"])]
    assert campaign, (reasons, rows)
    assert {r["principal_id"] for r in campaign} <= {f"ip:198.51.100.{i}" for i in range(3, 5)}


def test_malformed_and_hostile_bodies_get_problems_not_500(gw: GatewayProc) -> None:
    assert post(gw, b'{"body": "unterminated')[0] == 400
    deep = b'{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert post(gw, deep)[0] in (400, 413)
    status, body, _ = post(gw, b"body=hello", content_type="text/plain")
    assert status == 415 and json.loads(body)["decision_id"]
    bomb = json.dumps({"body": "a" * 200_000 + "!"}).encode()
    assert post(gw, bomb)[0] in (200, 202, 413)
