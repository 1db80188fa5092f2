"""Review fixtures: a migrated database on SQLite (temp file) and on a real PostgreSQL (a throwaway
schema per test, skipped with the reason when unreachable; TSGATE_TEST_PG_URL overrides)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from authn.db import Database
from moderation.records import NewReviewItem

PG_URL = os.environ.get("TSGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    admin = None
    schema = f"tsgate_reviewtest_{uuid.uuid4().hex[:16]}"
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'review.db'}")
    else:
        admin = create_async_engine(PG_URL, connect_args={"timeout": 5})
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as exc:  # any failure to reach the server: skip, saying why
            await admin.dispose()
            pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}); set TSGATE_TEST_PG_URL")
        database = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await database.migrate()
        yield database
    finally:
        await database.dispose()
        if admin is not None:
            try:
                async with admin.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            finally:
                await admin.dispose()


def new_item(decision_id: str, **overrides: Any) -> NewReviewItem:
    fields: dict[str, Any] = {
        "kind": "content", "action": "hold", "rule_id": "comments", "decision_id": decision_id,
        "principal_id": "alice", "principal_kind": "user",
        "content": {"fields": [{"field": "/body", "text": "WINNER!! claim your prize"}]},
        "symbols": [{"name": "model.spam", "weight": 11.5, "evidence": "p=0.958"}], "score": 11.5,
        "priority": 11, "request": {"method": "POST", "path": "/api/posts/1/comments", "query": "",
                                    "content_type": "application/json", "body": {"text": '{"body": "x"}'}},
        "created_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return NewReviewItem(**fields)
