"""One suite for the accounts database, run on SQLite (aiosqlite, a temp file) and on a real PostgreSQL
(asyncpg, a throwaway schema per test, dropped afterwards). PostgreSQL params are skipped, with the
reason, when the server is unreachable; TSGATE_TEST_PG_URL overrides its URL.

SECURITY.md class 4: refresh-token races are settled by one atomic compare-and-set (advance)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from authn.accounts import AccountStore, SessionStore
from authn.db import AuthnStoreError, Database, migrations_head
from authn.errors import AccountExistsError
from gateway.core.clock import FrozenClock
from gateway.core.errors import ConfigError, StoreError

PG_URL = os.environ.get("TSGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@dataclass
class Backend:
    """Opens Databases on one isolated database (a SQLite file or a PostgreSQL schema)."""

    url: str
    connect_args: dict[str, Any]
    opened: list[Database] = field(default_factory=list)

    def open(self) -> Database:
        db = Database(self.url, connect_args=self.connect_args)
        self.opened.append(db)
        return db


async def _pg_schema() -> tuple[str, Callable[[], Any]]:
    """Create a unique schema; returns it and an async dropper. Skips when PostgreSQL is unreachable."""
    admin = create_async_engine(PG_URL, connect_args={"timeout": 5})
    schema = f"tsgate_test_{uuid.uuid4().hex[:16]}"
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except (OSError, Exception) as exc:  # any failure to reach the server: skip
        await admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}); set TSGATE_TEST_PG_URL")

    async def drop() -> None:
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        finally:
            await admin.dispose()

    return schema, drop


def fullwidth(ascii_text: str) -> str:
    """The full-width (U+FF01..U+FF5E) form of ASCII text; NFKC maps it back."""
    return "".join(chr(ord(c) + 0xFEE0) for c in ascii_text)


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend(f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}", {})
        drop = None
    else:
        schema, drop = await _pg_schema()
        b = Backend(PG_URL, {"server_settings": {"search_path": schema}})
    try:
        yield b
    finally:
        for db in b.opened:
            await db.dispose()
        if drop is not None:
            await drop()


@pytest.fixture
async def db(backend: Backend) -> Database:
    database = backend.open()
    await database.migrate()
    return database


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def accounts(db: Database, clock: FrozenClock) -> AccountStore:
    return AccountStore(db, clock)


@pytest.fixture
def sessions(db: Database, clock: FrozenClock) -> SessionStore:
    return SessionStore(db, clock)


async def _account_id(accounts: AccountStore, name: str = "alice") -> str:
    return (await accounts.create(name, f"{name}@example.com", "$argon2id$fake")).id


# -- schema ------------------------------------------------------------------------------------------


async def test_migrate_is_idempotent(db: Database, accounts: AccountStore) -> None:
    """Running the migrations again on an up-to-date database changes nothing."""
    await db.migrate()
    await db.migrate()
    assert await accounts.count() == 0
    async with db.transaction() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == migrations_head()


async def test_concurrent_migrations_are_serialized(backend: Backend) -> None:
    """Several processes starting at once on a fresh database all succeed (one migrates, the rest wait)."""
    dbs = [backend.open() for _ in range(3)]
    await asyncio.gather(*(d.migrate() for d in dbs))
    assert await AccountStore(dbs[0]).count() == 0


# -- accounts ----------------------------------------------------------------------------------------


async def test_create_and_find_by_username_and_email(accounts: AccountStore, clock: FrozenClock) -> None:
    """by_login finds the account by username (any case, NFKC forms) and by email (any case)."""
    created = await accounts.create("Alice_W", "Alice.W@Example.com", "$argon2id$fake")
    assert created.username == "Alice_W" and created.email == "Alice.W@Example.com"
    assert created.status == "active" and created.roles == ("user",) and created.is_active
    assert created.created_at == datetime.fromtimestamp(clock.now(), UTC)
    logins = ("Alice_W", "alice_w", " ALICE_W ", fullwidth("ALICE_W"), "alice.w@example.com", "ALICE.W@EXAMPLE.COM")
    for login in logins:
        found = await accounts.by_login(login)
        assert found == created, login
    assert await accounts.by_id(created.id) == created
    assert await accounts.by_login("nobody") is None
    assert await accounts.by_login("") is None
    assert await accounts.by_login("alice_w@example.com") is None
    assert await accounts.by_id(uuid.uuid4().hex) is None
    assert await accounts.count() == 1


async def test_timestamps_come_back_utc_aware(accounts: AccountStore, clock: FrozenClock) -> None:
    """Stored datetimes come back timezone-aware in UTC on every backend."""
    await _account_id(accounts)
    found = await accounts.by_login("alice")
    assert found is not None
    for value in (found.created_at, found.updated_at, found.password_changed_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert value == datetime.fromtimestamp(clock.now(), UTC)


async def test_duplicate_username_differing_in_case_is_refused(accounts: AccountStore) -> None:
    """A username taken in another letter case (or full-width form) raises AccountExistsError."""
    await accounts.create("alice", "alice@example.com", "h")
    with pytest.raises(AccountExistsError):
        await accounts.create("ALICE", "other@example.com", "h")
    with pytest.raises(AccountExistsError):
        await accounts.create(fullwidth("alice"), "third@example.com", "h")
    assert await accounts.count() == 1


async def test_duplicate_email_differing_in_case_is_refused(accounts: AccountStore) -> None:
    """An email taken in another letter case raises AccountExistsError; the store keeps working."""
    await accounts.create("alice", "alice@example.com", "h")
    with pytest.raises(AccountExistsError):
        await accounts.create("bob", "ALICE@Example.COM", "h")
    await accounts.create("bob", "bob@example.com", "h")
    assert await accounts.count() == 2


async def test_invalid_account_input_is_a_caller_bug(accounts: AccountStore) -> None:
    """A username with '@' (it could never log in by name), an email without one, or bad roles: ValueError."""
    with pytest.raises(ValueError, match="username"):
        await accounts.create("a@b", "a@example.com", "h")
    with pytest.raises(ValueError, match="email"):
        await accounts.create("alice", "not-an-email", "h")
    with pytest.raises(ValueError, match="roles"):
        await accounts.create("alice", "alice@example.com", "h", roles=("Admin,root",))


async def test_set_status_roles_and_password_hash(accounts: AccountStore, clock: FrozenClock) -> None:
    """Status, roles and password hash updates are stored and stamp updated_at / password_changed_at."""
    account_id = await _account_id(accounts)
    clock.advance(60)
    assert await accounts.set_status(account_id, "suspended")
    assert await accounts.set_roles(account_id, ["user", "moderator", "user"])
    clock.advance(60)
    assert await accounts.set_password_hash(account_id, "$argon2id$new")
    found = await accounts.by_id(account_id)
    assert found is not None
    assert found.status == "suspended" and not found.is_active
    assert found.roles == ("user", "moderator")
    assert found.password_hash == "$argon2id$new"
    assert found.password_changed_at == found.updated_at == found.created_at + timedelta(seconds=120)
    assert await accounts.set_status(account_id, "banned")
    assert (await accounts.by_id(account_id) or found).status == "banned"


async def test_updates_on_unknown_account_return_false(accounts: AccountStore) -> None:
    """Updating an account that does not exist is False, not an error; a bad status is ValueError."""
    missing = uuid.uuid4().hex
    assert not await accounts.set_status(missing, "banned")
    assert not await accounts.set_roles(missing, ["user"])
    assert not await accounts.set_password_hash(missing, "h")
    with pytest.raises(ValueError, match="status"):
        await accounts.set_status(missing, "deleted")  # type: ignore[arg-type]


async def test_password_hash_not_in_repr(accounts: AccountStore) -> None:
    """An AccountRecord's repr never shows the password hash (logs, tracebacks)."""
    account = await accounts.create("alice", "alice@example.com", "$argon2id$secret-hash")
    assert "secret-hash" not in repr(account)


# -- sessions ----------------------------------------------------------------------------------------


async def test_session_create_and_get(accounts: AccountStore, sessions: SessionStore, clock: FrozenClock) -> None:
    """A new session starts at generation 0 and expires ttl seconds from now."""
    account_id = await _account_id(accounts)
    created = await sessions.create(account_id, ttl_seconds=3600)
    assert len(created.sid) == 32 and created.generation == 0 and created.revoked_at is None
    assert created.expires_at - created.created_at == timedelta(hours=1)
    assert await sessions.get(created.sid) == created
    assert created.is_active(datetime.fromtimestamp(clock.now(), UTC))
    assert await sessions.get(uuid.uuid4().hex) is None


async def test_session_for_unknown_account_is_refused(sessions: SessionStore) -> None:
    """The foreign key is enforced on every backend (SQLite needs PRAGMA foreign_keys)."""
    with pytest.raises(AuthnStoreError) as info:
        await sessions.create(uuid.uuid4().hex, ttl_seconds=60)
    assert isinstance(info.value, StoreError)


async def test_advance_with_right_generation_increments(accounts: AccountStore, sessions: SessionStore) -> None:
    """advance(sid, current) returns current + 1, each time."""
    sid = (await sessions.create(await _account_id(accounts), 3600)).sid
    assert await sessions.advance(sid, 0) == 1
    assert await sessions.advance(sid, 1) == 2
    assert (await sessions.get(sid) or pytest.fail("missing")).generation == 2


async def test_advance_with_stale_generation_returns_none(accounts: AccountStore, sessions: SessionStore) -> None:
    """A replayed (older) refresh token's generation no longer matches: None, and nothing changes."""
    sid = (await sessions.create(await _account_id(accounts), 3600)).sid
    assert await sessions.advance(sid, 0) == 1
    assert await sessions.advance(sid, 0) is None
    assert await sessions.advance(sid, 5) is None
    assert await sessions.advance(uuid.uuid4().hex, 0) is None
    assert (await sessions.get(sid) or pytest.fail("missing")).generation == 1


async def test_concurrent_advance_race_has_one_winner(accounts: AccountStore, sessions: SessionStore) -> None:
    """20 concurrent refreshes of the same generation (separate DB sessions): exactly one wins."""
    sid = (await sessions.create(await _account_id(accounts), 3600)).sid
    results = await asyncio.gather(*(sessions.advance(sid, 0) for _ in range(20)))
    assert results.count(1) == 1
    assert results.count(None) == 19
    assert (await sessions.get(sid) or pytest.fail("missing")).generation == 1


async def test_expired_session_cannot_advance(accounts: AccountStore, sessions: SessionStore,
                                              clock: FrozenClock) -> None:
    """Once expires_at passes, the session neither advances nor counts as active."""
    account_id = await _account_id(accounts)
    sid = (await sessions.create(account_id, 60)).sid
    clock.advance(61)
    assert await sessions.advance(sid, 0) is None
    assert await sessions.active_for(account_id) == []


async def test_revoke(accounts: AccountStore, sessions: SessionStore, clock: FrozenClock) -> None:
    """revoke marks the session once (the first reason is kept) and advance then returns None."""
    sid = (await sessions.create(await _account_id(accounts), 3600)).sid
    assert await sessions.revoke(sid, "logout")
    assert not await sessions.revoke(sid, "again")
    revoked = await sessions.get(sid)
    assert revoked is not None
    assert revoked.revoked_reason == "logout"
    assert revoked.revoked_at == datetime.fromtimestamp(clock.now(), UTC)
    assert not revoked.is_active(datetime.fromtimestamp(clock.now(), UTC))
    assert await sessions.advance(sid, 0) is None
    assert not await sessions.revoke(uuid.uuid4().hex, "unknown")


async def test_revoke_all_returns_sids_and_blocks_advance(accounts: AccountStore, sessions: SessionStore) -> None:
    """revoke_all revokes every live session of the account, returns their sids, and leaves others alone."""
    alice, bob = await _account_id(accounts, "alice"), await _account_id(accounts, "bob")
    a1, a2, a3 = [(await sessions.create(alice, 3600)).sid for _ in range(3)]
    b1 = (await sessions.create(bob, 3600)).sid
    await sessions.revoke(a3, "logout")
    assert {s.sid for s in await sessions.active_for(alice)} == {a1, a2}
    assert sorted(await sessions.revoke_all(alice, "password changed")) == sorted([a1, a2])
    assert await sessions.revoke_all(alice, "again") == []
    for sid in (a1, a2):
        assert await sessions.advance(sid, 0) is None
        assert (await sessions.get(sid) or pytest.fail("missing")).revoked_reason == "password changed"
    assert await sessions.active_for(alice) == []
    assert [s.sid for s in await sessions.active_for(bob)] == [b1]
    assert await sessions.advance(b1, 0) == 1


# -- configuration and failures ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql+aiomysql://u@h/db", "sqlite+aiosqlite://", "sqlite:///:memory:",
                                 "not a url"])
def test_bad_database_url_is_config_error(url: str) -> None:
    """Unsupported drivers, in-memory SQLite and garbage fail at construction with ConfigError."""
    with pytest.raises(ConfigError, match="accounts database url"):
        Database(url)


async def test_unreachable_database_raises_store_error(tmp_path: Path) -> None:
    """Driver and network failures surface as AuthnStoreError (a StoreError), never SQLAlchemy types."""
    for url in ("postgresql+asyncpg://postgres@127.0.0.1:1/test", f"sqlite:///{tmp_path / 'missing' / 'x.db'}"):
        db = Database(url)
        try:
            with pytest.raises(AuthnStoreError, match="accounts database error"):
                await db.migrate()
        finally:
            await db.dispose()
    # aiosqlite stops a failed connection's worker thread without awaiting it; let that finish while the
    # event loop is still open (otherwise its thread reports "Event loop is closed" at interpreter exit).
    await asyncio.sleep(0.1)
