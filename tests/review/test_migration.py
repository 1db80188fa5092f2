"""Migrations 0003 and 0004 create exactly the ORM's review tables (decisions, audit, the delivery
outbox) on SQLite and PostgreSQL; ``downgrade`` to 0003 removes only the outbox's due time (rows
stay, and a row queued before 0004 is due at once after the upgrade), and to 0002 the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from authn.db import MIGRATIONS, Database
from authn.models import Base
from gateway.core.clock import FrozenClock
from review import models  # noqa: F401 - registers the review tables on Base.metadata
from review.outbox import Carried, Delivery, Outbox

REVIEW_TABLES = {"review_decisions", "review_audit", "review_webhooks"}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata)
            if any(t in repr(d) for t in REVIEW_TABLES)]


def _command(connection: Connection, verb: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    getattr(command, verb)(config, revision)


class _Ok:
    attempts, backoff, timeout = 3, 1.0, 1.0

    def __init__(self) -> None:
        self.carried: list[str] = []

    async def carry(self, delivery: Delivery) -> Carried:
        self.carried.append(delivery.id)
        return Carried(True, 204)


async def test_migrations_match_the_orm_and_0004_downgrades_and_upgrades_with_rows(db: Database) -> None:
    """Head is 0004 with no difference from the ORM; a pending row survives 0004 → 0003 → 0004 and
    is then due (no next_attempt_at); 0002 drops the review tables."""
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == "0004"
        await conn.run_sync(_command, "downgrade", "0003")
        columns = {c["name"] for c in await conn.run_sync(
            lambda c: c.dialect.get_columns(c, "review_webhooks"))}
        assert "next_attempt_at" not in columns and "attempts" in columns
        now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        await conn.execute(text(
            "INSERT INTO review_webhooks (id, item_id, event, url, payload, state, attempts, created_at, updated_at) "
            "VALUES ('old', NULL, 'remove', 'http://h/x', '{}', 'pending', 1, :now, :now)"), {"now": now})
        await conn.run_sync(_command, "upgrade", "head")
        await conn.commit()
    outbox = Outbox(db, clock=FrozenClock(now.timestamp()))
    courier = _Ok()
    outbox.route({"*": courier})
    assert await outbox.run_due() == 1 and courier.carried == ["old"]
    assert (await outbox.get("old"))["state"] == "delivered"
    async with db.engine.connect() as conn:
        await conn.run_sync(_command, "downgrade", "0002")
        await conn.commit()
    async with db.engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
        assert not names & REVIEW_TABLES and "review_items" in names
