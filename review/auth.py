"""Who may use the review API and console: tsgate accounts with role ``moderator`` or ``admin``
(a tsgate access token, as ``Authorization: Bearer`` for the API or in the console's HttpOnly
cookie), or the admin bearer token. Cookie-authenticated writes must carry a CSRF token.

CSRF (OWASP CSRF cheat sheet, "signed double-submit"/HMAC token): the token is an HMAC of the
session cookie's value, so it is bound to the session, needs no server state, and is the same in
every worker; a cross-site page can neither read the cookie nor compute the token. The cookie is
also ``SameSite=Strict`` and ``HttpOnly`` (defence in depth)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from authn.runtime import AuthnRuntime, AuthResult
from gateway.api.auth import token_matches

__all__ = ["COOKIE", "MODERATOR_ROLES", "Moderator", "csrf_token", "identify"]

COOKIE = "tsgate_console"
MODERATOR_ROLES = frozenset({"moderator", "admin"})


@dataclass(frozen=True, slots=True)
class Moderator:
    name: str
    via: str  # "bearer" | "admin_token" | "cookie"
    session_token: str = ""


def csrf_token(session_token: str) -> str:
    key = hashlib.sha256(b"tsgate-console-csrf:" + session_token.encode()).digest()
    return hmac.new(key, b"csrf", hashlib.sha256).hexdigest()


def csrf_ok(moderator: Moderator, presented: str | None) -> bool:
    """Only cookie sessions need one: a bearer header is never sent by a browser on its own."""
    if moderator.via != "cookie":
        return True
    return bool(presented) and hmac.compare_digest(csrf_token(moderator.session_token), presented or "")


async def identify(authn: AuthnRuntime | None, admin_token: str | None, authorization: str | None,
                   cookie: str | None) -> Moderator | str:
    """The moderator, or the reason id to refuse with (``review.unauthorized`` or ``review.forbidden``)."""
    if authorization is not None:
        if token_matches(admin_token, authorization):
            return Moderator("admin", "admin_token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "review.unauthorized"
        return await _account(authn, token.strip(), "bearer")
    if cookie:
        return await _account(authn, cookie, "cookie")
    return "review.unauthorized"


async def _account(authn: AuthnRuntime | None, token: str, via: str) -> Moderator | str:
    if authn is None or len(token) > 4096:
        return "review.unauthorized"
    checked = await authn.verify_access(token)
    if isinstance(checked, AuthResult):
        return "review.unavailable" if checked.error == "unavailable" else "review.unauthorized"
    if not MODERATOR_ROLES & set(checked.roles):
        return "review.forbidden"
    return Moderator(str(checked.raw.get("name") or checked.sub), via, token)
