"""The moderator API on a real `tsgate run` process in front of the demo backend: who may use it,
claims and leases, decisions that act (an approved held comment reaches the backend as its author,
a removal is announced by a signed webhook, a ban ends the account's sessions), idempotency, the
audit log, stats, dead-lettered webhooks, and problem+json for every refusal."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from authn.db import Database
from followers.actions import FollowReview
from followers.review import ModerationQueueSink
from moderation.records import ReviewQueue
from tests.conftest import ADMIN_TOKEN, Backend, GatewayProc, policy_text, request
from tests.review.conftest import PG_URL
from tests.review.helpers import (
    ROUTES,
    SPAM,
    SPAM_2,
    Receiver,
    access_token,
    api,
    backend_token,
    comment,
    create_account,
    new_post,
    post_json,
    receiver,
    start,
)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver()


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path, hook: Receiver) -> GatewayProc:
    return start(start_gateway, policy_text(backend.port, ROUTES.format(db=tmp_path / "review.db", webhook=hook.url)))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a throwaway database on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'review.db'}"
        return
    name = f"tsgate_review_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable server: skip, saying why
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}); set TSGATE_TEST_PG_URL")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg(statement: str) -> None:
    engine = create_async_engine(PG_URL, connect_args={"timeout": 5}, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def gw_any(backend: Backend, start_gateway: Callable[..., GatewayProc], database_url: str,
           hook: Receiver) -> GatewayProc:
    policy = ROUTES.replace('"sqlite+aiosqlite:///{db}"', '"{db}"').format(db=database_url, webhook=hook.url)
    return start(start_gateway, policy_text(backend.port, policy))


def held(gw: GatewayProc, post_id: int, text: str, author: str = "alice") -> str:
    response = comment(gw, post_id, text, {"Authorization": f"Token {backend_token(author)}"})
    assert response.status == 202, response.body
    assert response.json()["reason"] == "moderation.held"
    return str(response.json()["decision_id"])


def backend_comments(backend: Backend, post_id: int) -> list[dict[str, object]]:
    response = request(backend.port, "GET", f"/api/posts/{post_id}/comments",
                       headers={"X-Tsgate-User": "viewer"})
    assert response.status == 200, response.body
    return list(response.json()["items"])


def test_only_moderators_and_admins_get_in_and_refusals_are_problems(gw: GatewayProc) -> None:
    """No credential: 401; a plain account: 403; a moderator's token or the admin token: 200."""
    create_account(gw, "mia", role="moderator")
    create_account(gw, "plain")
    for token, status, reason in ((None, 401, "review.unauthorized"), ("garbage", 401, "review.unauthorized"),
                                  (access_token(gw, "plain"), 403, "review.forbidden")):
        response = api(gw, "GET", "/review/items", token)
        assert response.status == status and response.json()["reason"] == reason
        assert response.headers["content-type"] == "application/problem+json"
    assert api(gw, "GET", "/review/items", access_token(gw, "mia")).status == 200
    assert api(gw, "GET", "/review/stats", ADMIN_TOKEN).status == 200
    missing = api(gw, "GET", "/review/items/nope", ADMIN_TOKEN)
    assert missing.status == 404 and missing.json()["reason"] == "review.not_found"
    bad = api(gw, "POST", "/review/items/nope/decision", ADMIN_TOKEN, {"decision": "obliterate"})
    assert bad.status == 400 and bad.json()["reason"] == "admin.bad_request"
    assert "/review/items" in json.loads(request(gw.admin_port, "GET", "/openapi.json").body)["paths"]
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    hostile = [("GET", "/review/items?limit=-1", None), ("GET", "/review/items?limit=99999999999999999999", None),
               ("GET", "/review/items?min_score=nan", None), ("GET", "/review/items?state=gone", None),
               ("GET", "/review/items/" + "x" * 5000, None), ("GET", "/review/audit?item_id=" + "%00" * 40, None),
               ("POST", "/review/items/x/decision", b"{not json"), ("POST", "/review/claim", b"[1, 2]"),
               ("POST", "/review/groups/g/decision", b'{"decision": "approve", "extra": 1}'),
               ("POST", "/review/webhooks/nope/retry", None), ("GET", "/review/items?older_than=1e308", None)]
    for method, path, body in hostile:
        headers = {**auth, "Content-Type": "application/json"} if body is not None else auth
        response = request(gw.admin_port, method, path, body=body, headers=headers)
        assert 400 <= response.status < 500 or response.status == 200, (path, response.status, response.body)
        if response.status >= 400:
            assert response.headers["content-type"] == "application/problem+json", path


def test_approve_forwards_the_held_comment_as_its_author_and_remove_calls_the_signed_webhook(
        gw_any: GatewayProc, backend: Backend, hook: Receiver) -> None:
    """The approved comment exists on the backend, authored by alice, once even if approved twice;
    the removed one never reaches it and the backend hears of it through a verified webhook
    (SQLite and PostgreSQL)."""
    gw = gw_any
    create_account(gw, "mia", role="moderator")
    mia = access_token(gw, "mia")
    post_id = new_post(gw)
    first, second = held(gw, post_id, SPAM), held(gw, post_id, SPAM_2)
    assert backend_comments(backend, post_id) == []

    claimed = api(gw, "POST", "/review/claim", mia, {"kind": "content"})
    assert claimed.status == 200 and claimed.json()["lease_owner"] == "mia"
    item = claimed.json()
    taken = api(gw, "POST", f"/review/items/{item['id']}/claim", ADMIN_TOKEN)
    assert taken.status == 409 and taken.json()["reason"] == "review.lease_held"

    items = {i["decision_id"]: i for i in api(gw, "GET", "/review/items?kind=content", mia).json()["items"]}
    approve_id, remove_id = items[first]["id"], items[second]["id"]
    detail = api(gw, "GET", f"/review/items/{approve_id}", mia).json()
    assert detail["content"]["fields"][0]["text"] == SPAM and detail["request"]["method"] == "POST"
    assert "model.spam" in {s["name"] for s in detail["symbols"]}

    approved = api(gw, "POST", f"/review/items/{approve_id}/decision", mia, {"decision": "approve"})
    assert approved.status == 200, approved.body
    assert approved.json()["effects"]["forward"]["status"] == 201
    again = api(gw, "POST", f"/review/items/{approve_id}/decision", mia, {"decision": "approve"}).json()
    assert again["replayed"] and again["decision_id"] == approved.json()["decision_id"]
    conflict = api(gw, "POST", f"/review/items/{approve_id}/decision", mia, {"decision": "remove"})
    assert conflict.status == 409 and conflict.json()["reason"] == "review.already_decided"
    comments = backend_comments(backend, post_id)
    assert [(c["author"], c["body"]) for c in comments] == [("alice", SPAM)]

    removed = api(gw, "POST", f"/review/items/{remove_id}/decision", mia, {"decision": "remove", "note": "prize"})
    assert removed.status == 200 and removed.json()["effects"]["webhook"]["event"] == "remove"
    (delivery,) = hook.wait(1)
    assert delivery["event"] == "remove" and hook.bad_signatures == 0
    assert delivery["payload"]["gateway_decision"] == second and delivery["payload"]["moderator"] == "mia"
    assert len(backend_comments(backend, post_id)) == 1

    audit = api(gw, "GET", "/review/audit", mia).json()["entries"]
    actions = [(e["actor"], e["action"], e["item_id"]) for e in audit]
    assert ("mia", "decide:approve", approve_id) in actions and ("mia", "decide:remove", remove_id) in actions
    stats = api(gw, "GET", "/review/stats", mia).json()
    assert stats["rules"]["comments"] == {"decided": 2, "confirmed": 1, "precision": 0.5}
    assert stats["decisions_per_moderator"]["mia"] == {"approve": 1, "remove": 1}
    deliveries = api(gw, "GET", "/review/webhooks?state=delivered", mia).json()["deliveries"]
    assert sorted((d["event"], d["item_id"]) for d in deliveries) == [("forward", approve_id), ("remove", remove_id)]


def test_ban_bans_the_tsgate_account_and_ends_its_sessions(gw: GatewayProc, hook: Receiver) -> None:
    """A spammer with a tsgate account: banning them makes their token stop working at once."""
    create_account(gw, "spammer")
    token = access_token(gw, "spammer")
    post_id = new_post(gw)
    response = comment(gw, post_id, SPAM_2, {"Authorization": f"Bearer {token}"})
    assert response.status == 202, response.body
    decision = response.json()["decision_id"]
    (item,) = [i for i in api(gw, "GET", "/review/items", ADMIN_TOKEN).json()["items"]
               if i["decision_id"] == decision]
    banned = api(gw, "POST", f"/review/items/{item['id']}/decision", ADMIN_TOKEN, {"decision": "ban_account"})
    assert banned.status == 200, banned.body
    assert banned.json()["effects"]["ban"]["banned"] == ["spammer"]
    assert banned.json()["effects"]["ban"]["sessions_revoked"] >= 1
    account = request(gw.admin_port, "GET", "/accounts/spammer", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert account.json()["status"] == "banned"
    assert request(gw.port, "GET", "/_tsgate/auth/me", headers={"Authorization": f"Bearer {token}"}).status == 401
    assert hook.wait(1)[0]["event"] == "ban"


def test_a_webhook_that_keeps_failing_is_dead_lettered_and_can_be_retried(gw: GatewayProc, hook: Receiver) -> None:
    """Three attempts with back-off, then a dead letter visible in the API; a retry delivers it."""
    hook.status = 503
    post_id = new_post(gw)
    decision = held(gw, post_id, SPAM)
    (item,) = [i for i in api(gw, "GET", "/review/items", ADMIN_TOKEN).json()["items"]
               if i["decision_id"] == decision]
    assert api(gw, "POST", f"/review/items/{item['id']}/decision", ADMIN_TOKEN, {"decision": "remove"}).status == 200
    deadline = time.monotonic() + 10
    dead: list[dict[str, object]] = []
    while not dead and time.monotonic() < deadline:
        dead = api(gw, "GET", "/review/webhooks?state=dead", ADMIN_TOKEN).json()["deliveries"]
        time.sleep(0.05)
    assert dead and dead[0]["attempts"] == 3 and dead[0]["last_error"] == "HTTP 503"
    hook.status = 204
    retried = api(gw, "POST", f"/review/webhooks/{dead[0]['id']}/retry", ADMIN_TOKEN)
    assert retried.status == 200 and retried.json()["state"] == "delivered"
    assert hook.wait(1)[0]["delivery"] == dead[0]["id"]


def test_appeal_is_a_queue_item_linked_to_the_original_decision(gw: GatewayProc) -> None:
    """POST /_tsgate/appeals with a held comment's decision id makes an appeal item linked to the
    original and its evidence, with the original's priority; unknown ids are refused, and appeals
    are rate-limited per principal."""
    post_id = new_post(gw)
    decision = held(gw, post_id, SPAM)
    auth = {"Authorization": f"Token {backend_token('alice')}"}
    unknown = post_json(gw.port, "/_tsgate/appeals", {"decision_id": "0" * 26, "message": "hi"}, auth)
    assert unknown.status == 404 and unknown.json()["reason"] == "appeal.unknown_decision"
    made = post_json(gw.port, "/_tsgate/appeals", {"decision_id": decision, "message": "It was a joke."}, auth)
    assert made.status == 202, made.body
    appeals = api(gw, "GET", "/review/items?kind=appeal", ADMIN_TOKEN).json()["items"]
    assert len(appeals) == 1 and appeals[0]["content"]["message"] == "It was a joke."
    original = next(i for i in api(gw, "GET", "/review/items?kind=content", ADMIN_TOKEN).json()["items"]
                if i["decision_id"] == decision)
    assert appeals[0]["content"]["appeal_of"] == original["id"]
    # priority = score x reach (no follow detectors here: reach 1); the appeal is as urgent as its original
    assert original["priority"] == round(original["score"] * 100) and original["content"]["reach"]["value"] == 1
    assert appeals[0]["priority"] == original["priority"] and appeals[0]["symbols"] == original["symbols"]
    again = post_json(gw.port, "/_tsgate/appeals", {"decision_id": decision, "message": "Please"}, auth)
    assert again.status == 202  # the same appeal again: one item
    limited = post_json(gw.port, "/_tsgate/appeals", {"decision_id": decision, "message": "Please!"}, auth)
    assert limited.status == 429 and limited.json()["reason"] == "appeal.rate_limited"


def test_a_cohort_is_one_grouped_job_and_a_bulk_ban_bans_every_account(gw: GatewayProc, tmp_path: Path) -> None:
    """A follow cohort (written as fake-follower detection writes it) banned in one bulk decision:
    each listed tsgate account is banned; the cohort's webhook names them all."""
    for name in ("bot1", "bot2"):
        create_account(gw, name)
    tokens = [access_token(gw, name) for name in ("bot1", "bot2")]
    review = FollowReview(review_id="cohort:abc", kind="cohort", subject="cohort:abc", score=3.5,
                          summary="2 accounts followed 5 targets in lockstep", accounts=("bot1", "bot2", "ghost"),
                          targets=("t1",), details=(), detected_at=time.time(), shadow=False)

    async def write() -> None:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'review.db'}")
        try:
            await ModerationQueueSink(ReviewQueue(database)).submit(review)
        finally:
            await database.dispose()

    asyncio.run(write())
    (item,) = api(gw, "GET", "/review/items?kind=follow", ADMIN_TOKEN).json()["items"]
    assert item["group_id"] == "cohort:abc" and item["content"]["accounts"] == ["bot1", "bot2", "ghost"]
    bulk = api(gw, "POST", "/review/groups/cohort:abc/decision", ADMIN_TOKEN, {"decision": "ban_account"})
    assert bulk.status == 200 and [d["item_id"] for d in bulk.json()["decisions"]] == [item["id"]]
    detail = api(gw, "GET", f"/review/items/{item['id']}", ADMIN_TOKEN).json()
    ban = detail["decisions"][0]["effects"]["ban"]
    assert sorted(ban["banned"]) == ["bot1", "bot2"] and ban["unknown"] == ["ghost"]
    for token in tokens:
        assert request(gw.port, "GET", "/_tsgate/auth/me", headers={"Authorization": f"Bearer {token}"}).status == 401
    again = api(gw, "POST", "/review/groups/cohort:abc/decision", ADMIN_TOKEN, {"decision": "ban_account"})
    assert again.status == 422 and again.json()["reason"] == "review.decision_not_allowed"
