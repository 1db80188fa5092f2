"""Accounts and auth sessions in the database. Callers get frozen snapshots, never live ORM objects.

``SessionStore.advance`` is the refresh-rotation compare-and-set: one atomic conditional UPDATE, so of
many concurrent refreshes with the same generation exactly one wins (attack class 4: refresh races).
Database failures raise ``AuthnStoreError``; a taken username or email raises ``AccountExistsError``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError

from authn.db import Database
from authn.errors import AccountExistsError
from authn.models import Account, AuthSession
from authn.passwords import normalize_login
from gateway.core.clock import Clock, SystemClock

__all__ = ["AccountRecord", "AccountStatus", "AccountStore", "SessionRecord", "SessionStore"]

AccountStatus = Literal["active", "suspended", "banned"]
_STATUSES: frozenset[str] = frozenset(get_args(AccountStatus))
_ROLE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    username: str
    email: str
    status: AccountStatus
    roles: tuple[str, ...]
    password_hash: str = field(repr=False)
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    sid: str
    account_id: str
    generation: int
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None

    def is_active(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def _roles(roles: Iterable[str]) -> str:
    cleaned = tuple(dict.fromkeys(roles))
    if not cleaned or not all(_ROLE.fullmatch(role) for role in cleaned):
        raise ValueError(f"roles must be non-empty lowercase names, got {cleaned!r}")
    return ",".join(cleaned)


def _account(row: Account) -> AccountRecord:
    return AccountRecord(
        id=row.id, username=row.username, email=row.email, status=cast(AccountStatus, row.status),
        roles=tuple(row.roles.split(",")), password_hash=row.password_hash, created_at=row.created_at,
        updated_at=row.updated_at, password_changed_at=row.password_changed_at,
    )


def _session(row: AuthSession) -> SessionRecord:
    return SessionRecord(
        sid=row.sid, account_id=row.account_id, generation=row.generation, created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at, revoked_reason=row.revoked_reason,
    )


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class AccountStore:
    """Accounts keyed by id, unique by ``normalize_login`` of username and of email."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    async def create(self, username: str, email: str, password_hash: str,
                     roles: Iterable[str] = ("user",)) -> AccountRecord:
        """A new active account. ``AccountExistsError`` when the username or email is taken (ignoring case
        and Unicode compatibility forms). Invalid input is a caller bug: ``ValueError``."""
        username_key, email_key = normalize_login(username), normalize_login(email)
        if not 0 < len(username) <= 64 or not username_key or "@" in username_key or len(username_key) > 255:
            raise ValueError("username must be 1-64 characters without '@'")
        if not 0 < len(email) <= 254 or "@" not in email_key or len(email_key) > 512:
            raise ValueError("email must be 3-254 characters with an '@'")
        now = _now(self._clock)
        row = Account(
            id=uuid.uuid4().hex, username=username, username_key=username_key, email=email, email_key=email_key,
            password_hash=password_hash, status="active", roles=_roles(roles), created_at=now, updated_at=now,
            password_changed_at=now,
        )
        async with self._db.transaction() as session:
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise AccountExistsError("username or email already taken") from exc
        return _account(row)

    async def by_login(self, login: str) -> AccountRecord | None:
        """The account whose username or (when ``login`` has an "@") email matches, else None."""
        key = normalize_login(login)
        if not key:
            return None
        column = Account.email_key if "@" in key else Account.username_key
        async with self._db.transaction() as session:
            row = await session.scalar(select(Account).where(column == key))
            return None if row is None else _account(row)

    async def by_id(self, account_id: str) -> AccountRecord | None:
        async with self._db.transaction() as session:
            row = await session.get(Account, account_id)
            return None if row is None else _account(row)

    async def set_password_hash(self, account_id: str, new_hash: str) -> bool:
        """Store a new hash (password change or rehash on login). False when there is no such account."""
        now = _now(self._clock)
        return await self._update(account_id, password_hash=new_hash, password_changed_at=now, updated_at=now)

    async def set_status(self, account_id: str, status: AccountStatus) -> bool:
        """Suspend, ban or reactivate. Revoking the account's sessions is the caller's next step."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {status!r}")
        return await self._update(account_id, status=status, updated_at=_now(self._clock))

    async def set_roles(self, account_id: str, roles: Iterable[str]) -> bool:
        return await self._update(account_id, roles=_roles(roles), updated_at=_now(self._clock))

    async def count(self) -> int:
        async with self._db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(Account)) or 0)

    async def _update(self, account_id: str, **values: object) -> bool:
        async with self._db.transaction() as session:
            result = await session.execute(
                update(Account).where(Account.id == account_id).values(**values)
                .execution_options(synchronize_session=False))
            return _rowcount(result) == 1


class SessionStore:
    """Server-side login sessions: a refresh token names ``(sid, generation)``; rotating it advances the
    generation, so a replayed (older) refresh token no longer matches."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    async def create(self, account_id: str, ttl_seconds: float) -> SessionRecord:
        """A new session at generation 0. An unknown account_id violates the foreign key: AuthnStoreError."""
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be positive")
        wall = self._clock.now()
        now, expires = datetime.fromtimestamp(wall, UTC), datetime.fromtimestamp(wall + ttl_seconds, UTC)
        row = AuthSession(sid=uuid.uuid4().hex, account_id=account_id, generation=0, created_at=now,
                          expires_at=expires, revoked_at=None, revoked_reason=None)
        async with self._db.transaction() as session:
            session.add(row)
        return _session(row)

    async def get(self, sid: str) -> SessionRecord | None:
        """The session as stored (possibly revoked or expired: check ``is_active``), else None."""
        async with self._db.transaction() as session:
            row = await session.get(AuthSession, sid)
            return None if row is None else _session(row)

    async def advance(self, sid: str, expected_generation: int) -> int | None:
        """Compare-and-set: the new generation, or None when another refresh already advanced it, or the
        session is revoked, expired or unknown. One conditional UPDATE, atomic on every backend."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(AuthSession)
                .where(AuthSession.sid == sid, AuthSession.generation == expected_generation,
                       AuthSession.revoked_at.is_(None), AuthSession.expires_at > _now(self._clock))
                .values(generation=AuthSession.generation + 1)
                .execution_options(synchronize_session=False))
            return expected_generation + 1 if _rowcount(result) == 1 else None

    async def revoke(self, sid: str, reason: str) -> bool:
        """Revoke one session. False when unknown or already revoked (the first reason is kept)."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(AuthSession).where(AuthSession.sid == sid, AuthSession.revoked_at.is_(None))
                .values(revoked_at=_now(self._clock), revoked_reason=reason[:128])
                .execution_options(synchronize_session=False))
            return _rowcount(result) == 1

    async def revoke_all(self, account_id: str, reason: str) -> list[str]:
        """Revoke every not-yet-revoked session of the account (logout everywhere, password change, ban);
        returns the sids revoked by this call."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(AuthSession).where(AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None))
                .values(revoked_at=_now(self._clock), revoked_reason=reason[:128])
                .returning(AuthSession.sid)
                .execution_options(synchronize_session=False))
            return sorted(result.scalars().all())

    async def active_for(self, account_id: str) -> list[SessionRecord]:
        """The account's sessions that are neither revoked nor expired, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(AuthSession)
                .where(AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None),
                       AuthSession.expires_at > _now(self._clock))
                .order_by(AuthSession.created_at, AuthSession.sid))
            return [_session(row) for row in rows]
