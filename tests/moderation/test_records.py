"""The review-record table on SQLite (a temp file) and a real PostgreSQL (a throwaway schema per
test, dropped afterwards; skipped with the reason when unreachable; TSGATE_TEST_PG_URL overrides).
Migration 0002 creates exactly the ORM's table; enqueue is durable on return, idempotent per
(kind, decision id), and retries a bounded number of times before ReviewQueueError."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from authn.db import Database, migrations_head
from gateway.core.clock import FrozenClock
from gateway.core.state import MemoryStore
from moderation.errors import ReviewQueueError
from moderation.guard import ModerationGuard
from moderation.model import LinearModel
from moderation.records import NewReviewItem, ReviewItem, ReviewQueue
from tests.moderation.conftest import comment, make_ctx, make_settings, services

PG_URL = os.environ.get("TSGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def _pg_schema() -> tuple[str, Callable[[], Any]]:
    admin = create_async_engine(PG_URL, connect_args={"timeout": 5})
    schema = f"tsgate_modtest_{uuid.uuid4().hex[:16]}"
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any failure to reach the server: skip, saying why
        await admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}); set TSGATE_TEST_PG_URL")

    async def drop() -> None:
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        finally:
            await admin.dispose()

    return schema, drop


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    drop = None
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'review.db'}")
    else:
        schema, drop = await _pg_schema()
        database = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await database.migrate()
        yield database
    finally:
        await database.dispose()
        if drop is not None:
            await drop()


def item(decision_id: str = "d-1", **overrides: Any) -> NewReviewItem:
    fields: dict[str, Any] = {
        "kind": "content", "action": "hold", "rule_id": "comment", "decision_id": decision_id,
        "principal_id": "user-1", "principal_kind": "user",
        "content": {"fields": [{"field": "/comment/body", "text": "Fr\u0435\u0435 c\u0430sh \U0001f4b0"}]},
        "symbols": [{"name": "model.spam", "weight": 11.5, "evidence": "p=0.958"}], "score": 11.5,
        "request": {"method": "POST", "path": "/api/x", "body": {"text": "{}"}}, "model_version": "sha256:abc",
        "created_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return NewReviewItem(**fields)


async def test_migration_creates_the_review_table(db: Database) -> None:
    """Migrations reach 0002; running them again changes nothing."""
    await db.migrate()
    async with db.transaction() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == migrations_head()
        assert (await session.execute(text("SELECT count(*) FROM review_items"))).scalar_one() == 0


async def test_enqueue_is_committed_on_return(db: Database) -> None:
    """After enqueue returns, a new session reads the full record back (unicode intact)."""
    queue = ReviewQueue(db)
    item_id = await queue.enqueue(item())
    # A new session gets another pooled connection: it sees only committed rows.
    async with db.transaction() as session:
        row = (await session.execute(select(ReviewItem).where(ReviewItem.id == item_id))).scalar_one()
    assert (row.kind, row.state, row.action, row.priority, row.lease_owner) == ("content", "open", "hold", 0, None)
    assert row.content["fields"][0]["text"] == "Fr\u0435\u0435 c\u0430sh \U0001f4b0"
    assert row.symbols == [{"name": "model.spam", "weight": 11.5, "evidence": "p=0.958"}]
    assert row.request is not None and row.request["method"] == "POST"
    assert row.created_at == datetime(2026, 11, 24, 12, 0, tzinfo=UTC) and row.created_at.tzinfo is not None


async def test_enqueue_is_idempotent_per_decision(db: Database) -> None:
    """The same (kind, decision id) twice is one row: a retry after a lost acknowledgement is safe."""
    queue = ReviewQueue(db)
    first = await queue.enqueue(item("d-dup"))
    second = await queue.enqueue(item("d-dup", score=99.0))
    assert first == second
    appeal = await queue.enqueue(item("d-dup", kind="appeal", action="appeal"))  # another kind: another row
    assert appeal != first
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT count(*) FROM review_items"))).scalar_one() == 2


async def test_concurrent_enqueues(db: Database) -> None:
    """Many enqueues at once all land."""
    queue = ReviewQueue(db)
    ids = await asyncio.gather(*(queue.enqueue(item(f"d-{i}", priority=i)) for i in range(20)))
    assert len(set(ids)) == 20
    found = await queue.find("content", "d-7")
    assert found is not None and found.priority == 7


async def test_lease_columns_round_trip(db: Database) -> None:
    """The review-queue issue's claim fields exist and keep timezone-aware times."""
    queue = ReviewQueue(db)
    item_id = await queue.enqueue(item("d-lease"))
    expires = datetime(2026, 11, 24, 12, 5, tzinfo=UTC)
    async with db.transaction() as session:
        row = await session.get(ReviewItem, item_id)
        assert row is not None
        row.state, row.lease_owner, row.lease_expires_at = "claimed", "mod-1", expires
    found = await queue.find("content", "d-lease")
    assert found is not None
    assert (found.state, found.lease_owner, found.lease_expires_at) == ("claimed", "mod-1", expires)


async def test_unreachable_database_fails_after_bounded_retries(tmp_path: Path) -> None:
    """A database that cannot be written: ReviewQueueError after `attempts` tries, quickly."""
    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", connect_args={"timeout": 1})
    queue = ReviewQueue(broken, attempts=2, backoff=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ReviewQueueError, match="2 attempts"):
            await queue.enqueue(item())
    finally:
        await broken.dispose()
    assert loop.time() - started < 10


async def test_guard_hold_lands_in_the_table(db: Database, model: LinearModel) -> None:
    """End to end below the proxy: a held spam comment is in review_items when Hold is returned."""
    clock = FrozenClock()
    guard = ModerationGuard(make_settings(), services(MemoryStore(clock=clock), clock), model=model,
                            sink=ReviewQueue(db))
    ctx = make_ctx(comment("WINNER!! You have won a £1000 prize. Call 09061701461 now to claim"), user="mallory")
    decision = await guard.check(ctx)
    assert decision.kind == "hold"
    found = await ReviewQueue(db).find("content", ctx.decision_id)
    assert found is not None and found.principal_id == "mallory" and found.state == "open"
    assert found.model_version == model.version
    assert found.created_at - datetime.fromtimestamp(clock.now(), UTC) < timedelta(seconds=1)
