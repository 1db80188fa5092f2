"""The one guard contract. Every defence (IP lists, authn, limits, CAPTCHA, moderation) is a Guard."""

from __future__ import annotations

from typing import Literal, Protocol

from gateway.core.context import RequestContext
from gateway.core.decisions import Decision

__all__ = ["Guard", "OnError"]

OnError = Literal["open", "closed"]


class Guard(Protocol):
    """``check`` returns a Decision value; it raises only for bugs or broken infrastructure, and
    the pipeline then applies ``on_error``: ``open`` allows (with an alarm), ``closed`` denies.

    ``needs_body`` asks the proxy to buffer the request body (bounded) before ``check`` runs.
    ``after_response`` (optional) sees the upstream status, e.g. to count failed logins."""

    name: str
    on_error: OnError
    needs_body: bool

    async def check(self, ctx: RequestContext) -> Decision: ...
