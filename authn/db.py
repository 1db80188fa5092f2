"""The accounts database: an async SQLAlchemy engine chosen by URL, its migrations, and the one place
where SQLAlchemy and driver errors become ``AuthnStoreError``.

``sqlite+aiosqlite:///path.db`` (WAL, foreign keys on, 15 s busy timeout) for one host;
``postgresql+asyncpg://user@host/db`` for several. ``sqlite:///`` and ``postgresql://`` are accepted
as shorthands for those drivers. An in-memory SQLite URL is refused: every connection would get its
own empty database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from authn.errors import AuthnError
from gateway.core.errors import ConfigError, StoreError

__all__ = ["AuthnStoreError", "Database", "migrations_head"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_SUPPORTED = frozenset(_DRIVERS.values())
# Any constant works; it only has to be the same for every tsgate process migrating this database.
_PG_MIGRATE_LOCK = 0x7473_6761_7465  # "tsgate"


class AuthnStoreError(AuthnError, StoreError):
    """The accounts database failed (unreachable, timed out, locked, bad schema). Answer 503.

    The message names only the error type: SQLAlchemy's text can carry SQL parameters (hashes)."""


class Database:
    """An async engine plus its session factory. ``migrate()`` once at start, ``dispose()`` at exit.

    ``connect_args`` go to the driver (e.g. asyncpg ``{"server_settings": {"search_path": "x"}}``)."""

    def __init__(self, url: str, *, connect_args: Mapping[str, Any] | None = None) -> None:
        self.url = _parse_url(url)
        args: dict[str, Any] = dict(connect_args or {})
        if self.is_sqlite:
            args.setdefault("timeout", 15)
        self.engine: AsyncEngine = create_async_engine(self.url, connect_args=args, hide_parameters=True,
                                                       pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    async def migrate(self) -> None:
        """``alembic upgrade head`` on this database. Idempotent, and safe when several processes start
        at once (a PostgreSQL advisory lock, or SQLite ``BEGIN IMMEDIATE``, serializes them)."""
        async with translate_errors():
            async with self.engine.connect() as conn:
                if self.is_sqlite:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATE_LOCK})")
                await conn.run_sync(_upgrade_head)
                await conn.commit()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success; database errors become AuthnStoreError."""
        async with translate_errors(), self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        async with translate_errors():
            await self.engine.dispose()


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Translate SQLAlchemy, driver and network errors at the boundary (never leak their types)."""
    try:
        yield
    except (SQLAlchemyError, CommandError, OSError) as exc:
        orig = getattr(exc, "orig", None)
        detail = type(exc).__name__ + (f" ({type(orig).__name__})" if orig is not None else "")
        raise AuthnStoreError(f"accounts database error: {detail}") from exc


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # No detail: the unparsed string may hold a password.
        raise ConfigError("accounts database url: not a database URL") from None
    backend = parsed.get_backend_name()
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.drivername not in _SUPPORTED:
        raise ConfigError(f"accounts database url: use sqlite+aiosqlite:// or postgresql+asyncpg://, "
                          f"not {parsed.drivername}://")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError("accounts database url: an in-memory SQLite database is not shared; use a file")
    return parsed


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
        # locked" at once (no busy handler) when another process is doing the same at start-up.
        for attempt in range(100):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as exc:  # the driver's OperationalError, whichever adapter wraps it
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def migrations_head() -> str:
    """The newest schema revision this build ships (what ``migrate`` upgrades to)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None  # the package ships its migrations
    return head


def _upgrade_head(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
