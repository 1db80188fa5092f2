"""The authn guard: per route ``auth: required | optional`` and ``roles: [...]``.

Every token failure is the same 401 with ``WWW-Authenticate: Bearer error="invalid_token"``
(RFC 6750 §3), whatever the cause, so a client learns nothing about why. An invalid token is
refused even on ``optional`` routes: silently downgrading it to anonymous would hide expiry from
honest clients and hand attackers a free oracle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from authn.runtime import AuthnRuntime
from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Decision, Deny
from gateway.core.guard import OnError

__all__ = ["AuthnGuard", "decide"]

INVALID_TOKEN = Deny(401, "auth.invalid_token", "The access token is not valid.",
                     (("WWW-Authenticate", 'Bearer realm="tsgate", error="invalid_token"'),))
REQUIRED = Deny(401, "auth.required", "This route needs a signed-in user.",
                (("WWW-Authenticate", 'Bearer realm="tsgate"'),))
FORBIDDEN = Deny(403, "auth.forbidden", "Your account does not have a role this route needs.")
UNAVAILABLE = Deny(503, "auth.unavailable", "Sign-in cannot be checked right now; try again shortly.",
                   (("Retry-After", "5"),))


class AuthnGuard:
    name = "authn"
    on_error: OnError = "closed"  # authentication never fails open
    needs_body = False

    def __init__(self, runtime: AuthnRuntime, mode: Literal["required", "optional"], roles: Iterable[str] = ()):
        self.runtime = runtime
        self.mode = mode
        self.roles = frozenset(roles)

    async def check(self, ctx: RequestContext) -> Decision:
        result = await self.runtime.authenticate(ctx)
        if result.error:
            ctx.credential = "invalid" if result.error == "invalid_token" else "unavailable"
        else:
            ctx.credential = "none" if result.principal is None else "valid"
        ctx.principal = result.principal or ctx.principal
        return decide(ctx, self.mode, self.roles)


def decide(ctx: RequestContext, mode: Literal["required", "optional"], roles: frozenset[str]) -> Decision:
    """The route's answer once ``ctx.credential`` and ``ctx.principal`` are known (shared with
    `policy explain` / `replay`, which know the principal without its token)."""
    if ctx.credential == "invalid":
        return INVALID_TOKEN
    if ctx.credential == "unavailable":
        return UNAVAILABLE
    principal = ctx.principal
    if principal is None or not principal.authenticated:
        return REQUIRED if mode == "required" or roles else ALLOW
    if roles and not roles & principal.roles:
        return FORBIDDEN
    return ALLOW
