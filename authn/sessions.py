"""Sessions: token pairs, refresh rotation with reuse detection, logout and revocation.

A session is a *family*: one row in ``auth_sessions`` (sid, generation). Every refresh token
carries (sid, gen) inside an encrypted envelope and is good exactly once: a refresh advances the
generation with a compare-and-set in the database, so of two concurrent refreshes only one wins.
The winner's new pair is kept in the shared store for ``refresh_grace`` seconds, and a refresh of
the *previous* generation within that window gets the same successor (single-page apps refresh in
parallel). Any other older generation is reuse: a stolen token is being replayed, so the whole
family is revoked and a security event is logged (RFC 9700 §4.14.2 refresh token rotation).

Revocation must reach every gateway at once, so it lives in the shared state store: a revoked
family (``rev:{sid}:sid``) and a denylisted access-token jti (``rev:{sid}:jti:<jti>``), both
hash-tagged by sid so one MGET checks both, even on Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from authn.accounts import AccountRecord, AccountStore, SessionStore
from authn.errors import InvalidToken
from authn.jwe import RefreshEnvelope
from authn.tokens import AccessClaims, AccessTokens
from gateway.core.clock import Clock
from gateway.core.state import StateStore, store_key

__all__ = ["SessionService", "TokenPair"]

security_log = logging.getLogger("tsgate.security")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    sid: str

    def body(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "token_type": "Bearer", "expires_in": self.expires_in}


class SessionService:
    def __init__(self, *, sessions: SessionStore, accounts: AccountStore, tokens: AccessTokens,
                 envelope: RefreshEnvelope, store: StateStore, clock: Clock, refresh_ttl: float,
                 grace: float) -> None:
        self.sessions = sessions
        self.accounts = accounts
        self.tokens = tokens
        self.envelope = envelope
        self.store = store
        self.clock = clock
        self.refresh_ttl = refresh_ttl
        self.grace = grace

    # -- issuing ------------------------------------------------------------------------------
    def _pair(self, account: AccountRecord, sid: str, generation: int) -> TokenPair:
        roles = account.roles
        access, claims = self.tokens.issue(account.id, roles, sid, extra={"name": account.username})
        now = self.clock.now()
        refresh = self.envelope.seal({
            "sid": sid, "gen": generation, "sub": account.id, "iat": int(now),
            "exp": int(now + self.refresh_ttl), "jti": secrets.token_urlsafe(12),
        })
        return TokenPair(access, refresh, int(claims.exp - now), sid)

    async def start(self, account: AccountRecord) -> TokenPair:
        """A new session family for a freshly authenticated account."""
        session = await self.sessions.create(account.id, self.refresh_ttl)
        return self._pair(account, session.sid, session.generation)

    # -- refresh --------------------------------------------------------------------------------
    async def refresh(self, refresh_token: str) -> TokenPair | None:
        """A new pair for a valid, current refresh token; None for every kind of failure."""
        try:
            payload = self.envelope.open(refresh_token)
            sid, gen, sub, exp = str(payload["sid"]), int(payload["gen"]), str(payload["sub"]), float(payload["exp"])
        except (InvalidToken, KeyError, TypeError, ValueError):
            return None
        if exp < self.clock.now():
            return None
        session = await self.sessions.get(sid)
        if session is None or session.revoked_at is not None or session.account_id != sub:
            return None
        if gen == session.generation:
            # Read the account first so the winner of a race stores its successor as soon as
            # possible after advancing: the losers are polling for it.
            account = await self.accounts.by_id(sub)
            if account is None or account.status != "active":
                await self.revoke_family(sid, "account not active")
                return None
            new_gen = await self.sessions.advance(sid, gen)
            if new_gen is None:  # a concurrent refresh of the same token won the race
                return await self._successor(sid, gen, wait=True)
            pair = self._pair(account, sid, new_gen)
            await self.store.set(self._successor_key(sid, gen), json.dumps(pair.body()).encode(), ttl=self.grace)
            return pair
        if gen == session.generation - 1:
            # Either a refresh racing the rotation that is storing its successor right now, or a
            # replay: the successor exists (or appears in a moment) only in the first case.
            successor = await self._successor(sid, gen, wait=True)
            if successor is not None:
                return successor
        if gen < session.generation:
            security_log.warning("refresh token reuse: sid=%s gen=%d current=%d; family revoked",
                                 sid, gen, session.generation)
            await self.revoke_family(sid, "refresh token reuse")
        return None

    def _successor_key(self, sid: str, gen: int) -> str:
        return store_key("rt", sid, "successor", str(gen))

    async def _successor(self, sid: str, gen: int, wait: bool) -> TokenPair | None:
        """The pair issued when ``gen`` was rotated, if still within the grace window. The loser
        of a race may arrive before the winner stored it: wait a moment in that case."""
        for _ in range(20 if wait else 1):
            raw = await self.store.get(self._successor_key(sid, gen))
            if raw is not None:
                body = json.loads(raw)
                return TokenPair(body["access_token"], body["refresh_token"], int(body["expires_in"]), sid)
            if wait:
                await asyncio.sleep(0.01)
        return None

    # -- revocation -----------------------------------------------------------------------------
    def _revoked_keys(self, claims: AccessClaims) -> list[str]:
        return [store_key("rev", claims.sid, "sid"), store_key("rev", claims.sid, "jti", claims.jti)]

    async def revoke_family(self, sid: str, reason: str) -> None:
        await self.sessions.revoke(sid, reason)
        # Access tokens of this family stay refused until the longest one could have expired.
        await self.store.set(store_key("rev", sid, "sid"), b"1", ttl=self.tokens.ttl + self.tokens.leeway)

    async def logout(self, claims: AccessClaims, everywhere: bool) -> int:
        """Revoke this session (or every session of the account); denylist this access token."""
        remaining = max(1.0, claims.exp - self.clock.now() + self.tokens.leeway)
        await self.store.set(self._revoked_keys(claims)[1], b"1", ttl=remaining)
        if everywhere:
            return await self.revoke_account(claims.sub, "logout everywhere")
        await self.revoke_family(claims.sid, "logout")
        return 1

    async def revoke_account(self, account_id: str, reason: str) -> int:
        """Every session of the account (suspend, ban, logout everywhere)."""
        sids = await self.sessions.revoke_all(account_id, reason)
        for sid in sids:
            await self.store.set(store_key("rev", sid, "sid"), b"1", ttl=self.tokens.ttl + self.tokens.leeway)
        return len(sids)

    async def is_revoked(self, claims: AccessClaims) -> bool:
        """True when the token's family was revoked or the token was denylisted.
        Raises StoreError when the shared store cannot answer (the caller decides)."""
        values = await self.store.get_many(self._revoked_keys(claims))
        return any(v is not None for v in values)

