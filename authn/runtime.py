"""The identity runtime: everything authn needs at request time, built once per policy load.

``authenticate`` turns a request's credential into a Principal (tsgate's own Bearer tokens, then
the configured external authenticators); ``identity_headers`` is what the upstream learns about
that principal. Both are used by the AuthnGuard and by tsgate's own auth endpoints."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from authn.abuse import LoginAbuseTracker, LoginLimits
from authn.accounts import AccountStore, SessionStore
from authn.db import Database
from authn.errors import InvalidToken
from authn.external import ExternalAuthenticator
from authn.jwe import RefreshEnvelope
from authn.keys import AesKeyRing, SigningKeyRing, jwks
from authn.passwords import PROFILES, PasswordHasher, PasswordPolicy
from authn.sessions import SessionService
from authn.tokens import AccessClaims, AccessTokens, Assertions
from gateway.core.clock import Clock
from gateway.core.context import Principal, RequestContext
from gateway.core.decisions import Signal
from gateway.core.errors import StoreError
from gateway.core.state import StateStore

__all__ = ["INVALID", "AuthResult", "AuthSettings", "AuthnRuntime"]

log = logging.getLogger("tsgate.authn")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Plain settings (authn does not import the policy model; policies builds these)."""

    issuer: str = "tsgate"
    audience: str = "tsgate"
    access_ttl: float = 600.0
    refresh_ttl: float = 30 * 86400.0
    refresh_grace: float = 10.0
    upstream_audience: str = "upstream"
    assertion: bool = True
    revocation_fail: Literal["open", "closed"] = "open"
    registration: bool = True
    cookie_enabled: bool = True
    cookie_name: str = "tsgate_rt"
    cookie_secure: bool = True
    cookie_same_site: str = "strict"
    password_profile: str = "owasp"  # noqa: S105 - a profile name, not a password
    password_min_length: int = 15
    password_max_length: int = 256
    hash_concurrency: int = 2
    hash_queue: int = 64
    login: LoginLimits = field(default_factory=LoginLimits)


@dataclass(frozen=True, slots=True)
class AuthResult:
    principal: Principal | None  # None: anonymous
    presented: bool = False  # a credential we handle was presented
    error: Literal["", "invalid_token", "unavailable"] = ""


ANONYMOUS = AuthResult(None)
INVALID = AuthResult(None, True, "invalid_token")
UNAVAILABLE = AuthResult(None, True, "unavailable")


class AuthnRuntime:
    def __init__(
        self,
        settings: AuthSettings,
        *,
        database: Database,
        store: StateStore,
        clock: Clock,
        signing: SigningKeyRing,
        refresh_keys: AesKeyRing,
        externals: Sequence[ExternalAuthenticator] = (),
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.clock = clock
        self.externals = tuple(externals)
        self.accounts = AccountStore(database, clock)
        self.session_store = SessionStore(database, clock)
        self.hasher = hasher or PasswordHasher(PROFILES[settings.password_profile],
                                               max_concurrency=settings.hash_concurrency,
                                               max_queue=settings.hash_queue)
        self.password_policy = PasswordPolicy(settings.password_min_length, settings.password_max_length)
        self.abuse = LoginAbuseTracker(store, clock, settings.login)
        self.use_keys(signing, refresh_keys)

    def use_keys(self, signing: SigningKeyRing, refresh_keys: AesKeyRing) -> None:
        """(Re)load key rings: `tsgate keys rotate` + reload switches keys without downtime."""
        s = self.settings
        self.signing = signing
        self.tokens = AccessTokens(signing, issuer=s.issuer, audience=s.audience, ttl=s.access_ttl, clock=self.clock)
        self.assertions = Assertions(signing, issuer=s.issuer, clock=self.clock)
        self.envelope = RefreshEnvelope(refresh_keys)
        self.sessions = SessionService(
            sessions=self.session_store, accounts=self.accounts, tokens=self.tokens, envelope=self.envelope,
            store=self.store, clock=self.clock, refresh_ttl=s.refresh_ttl, grace=s.refresh_grace,
        )
        self.jwks_body = json.dumps(jwks(signing), separators=(",", ":")).encode()

    async def start(self) -> None:
        await self.database.migrate()

    async def close(self) -> None:
        self.hasher.close()
        await self.database.dispose()

    # -- request time ---------------------------------------------------------------------------
    async def verify_access(self, token: str, ctx: RequestContext | None = None) -> AccessClaims | AuthResult:
        """Claims of a valid, unrevoked tsgate access token, or the AuthResult to answer with."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            return INVALID
        try:
            if await self.sessions.is_revoked(claims):
                return INVALID
        except StoreError as exc:
            if self.settings.revocation_fail == "closed":
                return UNAVAILABLE
            log.warning("revocation check unavailable (%s); trusting the signature", exc)
            if ctx is not None:
                ctx.add_signal(Signal("auth.revocation_unchecked", 0.5, "state store unavailable"))
        return claims

    async def authenticate(self, ctx: RequestContext) -> AuthResult:
        bearer = None
        for header, value in ctx.headers:
            if header == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    bearer = rest.strip()
                break
        if bearer is not None:
            # tsgate's own token first: an unknown kid fails before any crypto, so a backend's
            # Bearer token costs little here before the external authenticators see it.
            checked = await self.verify_access(bearer, ctx)
            if not isinstance(checked, AuthResult):
                roles = frozenset(checked.roles)
                name = str(checked.raw.get("name") or checked.sub)
                return AuthResult(Principal(id=checked.sub, kind="user", roles=roles, session=checked.sid,
                                            name=name, claims=checked.raw), True)
            if checked.error == "unavailable" or not self.externals:
                return checked
        presented = False
        for external in self.externals:
            token = external.credential(ctx.headers)
            if token is None:
                continue
            presented = True
            principal = await external.verify(token)
            if principal is not None:
                return AuthResult(principal, True)
        if presented or bearer is not None:
            return INVALID
        return ANONYMOUS

    def identity_headers(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        """X-Tsgate-User / -Roles / -Assertion for an authenticated principal (none otherwise;
        inbound copies were already dropped by the proxy)."""
        principal = ctx.principal
        if principal is None or not principal.authenticated:
            return []
        roles = ",".join(sorted(principal.roles))
        out = [(b"x-tsgate-user", principal.name.encode("utf-8", "replace")), (b"x-tsgate-roles", roles.encode())]
        if self.settings.assertion:
            risk = risk_band(ctx)
            assertion = self.assertions.issue(principal.id, sorted(principal.roles), ctx.decision_id, risk,
                                              self.settings.upstream_audience)
            out.append((b"x-tsgate-assertion", assertion.encode("ascii")))
        return out


def risk_band(ctx: RequestContext) -> str:
    """low / medium / high from the weights of the request's signals."""
    score = sum(s.weight for s in ctx.signals)
    return "high" if score >= 2.0 else "medium" if score >= 0.5 else "low"
