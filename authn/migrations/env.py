"""Alembic environment for authn's schema.

``authn.db.Database.migrate`` hands a live (sync-facing) connection in ``config.attributes["connection"]``
from inside ``AsyncConnection.run_sync``, so the same code runs on aiosqlite and asyncpg. Without one
(the ``alembic`` CLI with ``sqlalchemy.url`` set), an async engine is built from the URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import moderation.records  # noqa: F401 - registers review_items on the same metadata (migration 0002)
import review.models  # noqa: F401 - review decisions, audit, webhooks (migration 0003)
from authn.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                          literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("authn migrations need a connection or sqlalchemy.url")
    asyncio.run(_run_from_url(url))


_main()
