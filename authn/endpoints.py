"""tsgate's own auth endpoints on the proxy listener, under the reserved prefix:

    POST {prefix}auth/register   {username, email, password}          → 201 account
    POST {prefix}auth/login      {login, password}                    → 200 token pair (+ cookie)
    POST {prefix}auth/refresh    {refresh_token} or the cookie        → 200 new pair
    POST {prefix}auth/logout     Bearer; ?all=true for every session  → 204
    GET  {prefix}auth/me         Bearer                               → 200 account
    GET  /.well-known/jwks.json                                       → public signing keys

Login answers the same 401 body, after the same argon2 work, for an unknown name, a wrong
password and a suspended or banned account (OWASP ASVS V6; SECURITY.md class 5). Writes need
``Content-Type: application/json``: a cross-site form cannot send it without a CORS preflight,
which is what keeps the refresh cookie from being usable by other sites."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

from authn.accounts import AccountRecord
from authn.errors import AccountExistsError, HasherBusyError
from authn.passwords import PasswordProblem, normalize_login
from authn.runtime import INVALID, AuthnRuntime, AuthResult
from authn.sessions import TokenPair
from gateway.core.asgi import EndpointProblem, Receive, Send, endpoint, read_json_object, send_json
from gateway.core.context import RequestContext
from gateway.core.decisions import Allow, Challenge, Deny
from gateway.core.pipeline import ChallengeResolver
from gateway.core.state import store_key

__all__ = ["AuthEndpoints"]

log = logging.getLogger("tsgate.authn")

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]
USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{2,31}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{2,63}$")
MAX_BODY = 16 * 1024
REGISTRATIONS_PER_IP_HOUR = 20
INVALID_CREDENTIALS = "The login or the password is not right."


def _header(ctx: RequestContext, name: bytes) -> str | None:
    value = ctx.header(name)
    return value.decode("latin-1") if value is not None else None


def _cookie(ctx: RequestContext, name: str) -> str | None:
    raw = _header(ctx, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


class AuthEndpoints:
    def __init__(self, runtime: AuthnRuntime, prefix: str, resolver: ChallengeResolver | None = None) -> None:
        self.runtime = runtime
        self.prefix = prefix
        self.resolver = resolver  # the CAPTCHA runtime: a clearance lets a challenged login go ahead
        self.cookie_path = prefix + "auth"

    def routes(self) -> dict[str, Handler]:
        p = self.prefix + "auth/"
        return {
            p + "register": self._wrap(self.register, "POST"),
            p + "login": self._wrap(self.login, "POST"),
            p + "refresh": self._wrap(self.refresh, "POST"),
            p + "logout": self._wrap(self.logout, "POST"),
            p + "me": self._wrap(self.me, "GET"),
            "/.well-known/jwks.json": self._wrap(self.jwks, "GET"),
        }

    @staticmethod
    def _wrap(handler: Handler, method: str) -> Handler:
        async def busy_is_503(ctx: RequestContext, receive: Receive, send: Send) -> int:
            try:
                return await handler(ctx, receive, send)
            except HasherBusyError:
                raise EndpointProblem(503, "auth.busy", "Too many sign-ins at once; retry.",
                                      (("Retry-After", "1"),)) from None

        return endpoint(busy_is_503, method)

    # -- helpers --------------------------------------------------------------------------------
    async def _json(self, ctx: RequestContext, receive: Receive) -> dict[str, Any]:
        return await read_json_object(ctx, receive, MAX_BODY)

    @staticmethod
    def _text(data: dict[str, Any], field: str, max_len: int) -> str:
        value = data.get(field)
        if not isinstance(value, str) or not value or len(value) > max_len:
            raise EndpointProblem(422, "request.invalid_field", f"'{field}' must be a non-empty string of at most "
                           f"{max_len} characters.", field=field)
        return value

    def _token_response_headers(self, pair: TokenPair) -> tuple[tuple[str, str], ...]:
        s = self.runtime.settings
        if not s.cookie_enabled:
            return ()
        attrs = [f"{s.cookie_name}={pair.refresh_token}", "HttpOnly", f"SameSite={s.cookie_same_site.capitalize()}",
                 f"Path={self.cookie_path}", f"Max-Age={int(s.refresh_ttl)}"]
        if s.cookie_secure:
            attrs.append("Secure")
        return (("Set-Cookie", "; ".join(attrs)),)

    def _clear_cookie(self) -> tuple[tuple[str, str], ...]:
        s = self.runtime.settings
        if not s.cookie_enabled:
            return ()
        secure = "; Secure" if s.cookie_secure else ""
        return (("Set-Cookie", f"{s.cookie_name}=; HttpOnly; Path={self.cookie_path}; Max-Age=0{secure}"),)

    async def _bearer(self, ctx: RequestContext) -> AuthResult:
        result = await self.runtime.authenticate(ctx)
        if result.error == "unavailable":
            raise EndpointProblem(503, "auth.unavailable", "Sign-in cannot be checked right now.",
                                  (("Retry-After", "5"),))
        if result.principal is None or result.principal.kind != "user":
            raise EndpointProblem(401, "auth.invalid_token", "A valid access token is required.",
                           (("WWW-Authenticate", 'Bearer realm="tsgate", error="invalid_token"'),))
        return result

    @staticmethod
    def _account_body(account: AccountRecord) -> dict[str, Any]:
        return {"id": account.id, "username": account.username, "email": account.email,
                "roles": list(account.roles), "status": account.status}

    # -- endpoints ------------------------------------------------------------------------------
    async def register(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        if not rt.settings.registration:
            raise EndpointProblem(403, "auth.registration_closed", "Registration is closed.")
        data = await self._json(ctx, receive)
        username = unicodedata.normalize("NFKC", self._text(data, "username", 64))
        email = unicodedata.normalize("NFKC", self._text(data, "email", 254)).strip()
        password = self._text(data, "password", 4096)
        if not USERNAME.match(username):
            raise EndpointProblem(422, "auth.bad_username", "Usernames are 3-32 letters, digits, '_', '.', '-'.")
        if not EMAIL.match(email):
            raise EndpointProblem(422, "auth.bad_email", "That does not look like an email address.")
        if await rt.store.incr(store_key("register", ctx.client_ip), ttl=3600) > REGISTRATIONS_PER_IP_HOUR:
            raise EndpointProblem(429, "auth.too_many_registrations", "Too many accounts from this address.",
                           (("Retry-After", "3600"),))
        checked = rt.password_policy.check(password, username=username, email=email)
        if isinstance(checked, PasswordProblem):
            raise EndpointProblem(422, checked.reason, checked.detail)
        password_hash = await rt.hasher.hash(checked)
        try:
            account = await rt.accounts.create(username, email, password_hash)
        except AccountExistsError:
            raise EndpointProblem(409, "auth.account_exists", "That username or email is already registered.") from None
        await send_json(send, 201, self._account_body(account), ctx.decision_id)
        return 201

    async def login(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        data = await self._json(ctx, receive)
        login = self._text(data, "login", 254)
        password = unicodedata.normalize("NFKC", self._text(data, "password", 4096))
        login_key = normalize_login(login)
        verdict = await rt.abuse.attempt(login_key, ctx.client_ip)
        for signal in verdict.signals:
            ctx.add_signal(signal)
        if verdict.kind in ("locked", "ip_blocked"):
            raise EndpointProblem(429, "auth.locked", "Too many failed sign-ins; try again later.",
                           (("Retry-After", str(verdict.retry_after)),))
        if verdict.kind == "challenge":
            await self._challenge(ctx)
        account = await rt.accounts.by_login(login)
        if account is None:
            await rt.hasher.verify_dummy(password)
            ok, rehash = False, False
        else:
            ok, rehash = await rt.hasher.verify(account.password_hash, password)
            ok = ok and account.status == "active"  # same answer, after the same work, when suspended
        if not ok or account is None:
            await rt.abuse.record_failure(login_key, ctx.client_ip)
            raise EndpointProblem(401, "auth.invalid_credentials", INVALID_CREDENTIALS)
        if rehash:  # parameters changed since this hash was made: upgrade it in place
            await rt.accounts.set_password_hash(account.id, await rt.hasher.hash(password))
        await rt.abuse.record_success(login_key)
        pair = await rt.sessions.start(account)
        await send_json(send, 200, pair.body(), ctx.decision_id, self._token_response_headers(pair))
        return 200

    async def _challenge(self, ctx: RequestContext) -> None:
        """The login is challenged (failures for this name, or credential stuffing): go ahead only
        with a clearance for this route's scope, else answer what the CAPTCHA ladder says."""
        challenge = Challenge("auth.challenge", level=2, detail="Solve the challenge, then sign in again.")
        decision = await self.resolver.resolve(ctx, challenge) if self.resolver is not None else challenge
        if isinstance(decision, Allow):
            return
        if isinstance(decision, Deny):
            raise EndpointProblem(decision.status, decision.reason, decision.detail, decision.headers)
        if isinstance(decision, Challenge):
            url = (self.resolver.challenge_url(ctx, decision) if self.resolver is not None
                   else f"{self.prefix}captcha/challenge")
            raise EndpointProblem(403, decision.reason, decision.detail,
                           (("Tsgate-Mitigated", "challenge"), *decision.headers),
                           challenge={"kind": decision.challenge, "level": decision.level, "url": url,
                                      "verify_url": f"{self.prefix}captcha/verify"})
        raise EndpointProblem(202, decision.reason, decision.detail, (("Tsgate-Mitigated", "hold"), *decision.headers),
                       queue=decision.queue)

    async def refresh(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        rt = self.runtime
        data = await self._json(ctx, receive)
        token = data.get("refresh_token") or _cookie(ctx, rt.settings.cookie_name)
        if not isinstance(token, str) or len(token) > 4096:
            token = ""
        pair = await rt.sessions.refresh(token) if token else None
        if pair is None:
            raise EndpointProblem(401, "auth.invalid_token", "The refresh token is not valid.",
                           (("WWW-Authenticate", 'Bearer realm="tsgate", error="invalid_token"'),
                            *self._clear_cookie()))
        await send_json(send, 200, pair.body(), ctx.decision_id, self._token_response_headers(pair))
        return 200

    async def logout(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        # Verified once, here: logout needs the claims (sid, jti, exp), not just the principal.
        scheme, _, token = (_header(ctx, b"authorization") or "").partition(" ")
        claims = await self.runtime.verify_access(token.strip()) if scheme.lower() == "bearer" else INVALID
        if isinstance(claims, AuthResult):
            if claims.error == "unavailable":
                raise EndpointProblem(503, "auth.unavailable", "Sign-in cannot be checked right now.",
                               (("Retry-After", "5"),))
            raise EndpointProblem(401, "auth.invalid_token", "A valid access token is required.",
                           (("WWW-Authenticate", 'Bearer realm="tsgate", error="invalid_token"'),))
        rt = self.runtime
        everywhere = b"all=true" in ctx.query.split(b"&") or b"all=1" in ctx.query.split(b"&")
        await rt.sessions.logout(claims, everywhere)
        await send_json(send, 204, None, ctx.decision_id, self._clear_cookie())
        return 204

    async def me(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        result = await self._bearer(ctx)
        assert result.principal is not None
        account = await self.runtime.accounts.by_id(result.principal.id)
        if account is None:
            raise EndpointProblem(401, "auth.invalid_token", "A valid access token is required.")
        await send_json(send, 200, self._account_body(account), ctx.decision_id)
        return 200

    async def jwks(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        body = self.runtime.jwks_body
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/jwk-set+json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"public, max-age=300"), (b"tsgate-decision", ctx.decision_id.encode())]})
        await send({"type": "http.response.body", "body": body})
        return 200
