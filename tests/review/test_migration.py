"""Migration 0003 creates exactly the ORM's review tables (decisions, audit, webhooks) on SQLite
and PostgreSQL, and ``downgrade`` to 0002 removes them again."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from authn.db import MIGRATIONS, Database
from authn.models import Base
from review import models  # noqa: F401 - registers the review tables on Base.metadata

REVIEW_TABLES = {"review_decisions", "review_audit", "review_webhooks"}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata)
            if any(t in repr(d) for t in REVIEW_TABLES)]


def _downgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.downgrade(config, "0002")


async def test_migration_0003_matches_the_orm_and_downgrades(db: Database) -> None:
    """No difference between the migrated schema and the ORM for the review tables; 0002 drops them."""
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == "0003"
        await conn.run_sync(_downgrade)
        await conn.commit()
    async with db.engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
        assert not names & REVIEW_TABLES and "review_items" in names
