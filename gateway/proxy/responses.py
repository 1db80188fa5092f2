"""Responses tsgate writes itself: RFC 9457 problem+json for every refusal, always with the
decision id (body and ``Tsgate-Decision`` header) and ``Cache-Control: no-store``.

A Challenge is rendered for who is asking: API clients get 403 problem+json with
``Tsgate-Mitigated: challenge`` and where to fetch the challenge (URL with scope and level) and
post the solution; a browser navigation (``Accept: text/html``) gets the interstitial page that
solves it, under a strict Content-Security-Policy."""

from __future__ import annotations

from typing import Any

from captcha.page import CSP, ChallengePage, wants_html
from captcha.runtime import CLEARANCE_HEADER
from gateway.core.asgi import send_problem
from gateway.core.context import RequestContext
from gateway.core.decisions import Challenge, Deny, Hold
from gateway.core.pipeline import ChallengeResolver

__all__ = ["Send", "decision_response", "send_problem"]

Send = Any  # ASGI send callable

_PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"tsgate-mitigated", b"challenge"),
]


async def decision_response(
    send: Send, decision: Deny | Challenge | Hold, decision_id: str, prefix: str,
    ctx: RequestContext | None = None, resolver: ChallengeResolver | None = None, page: ChallengePage | None = None,
) -> int:
    """Render a stopping decision; return the status sent."""
    if isinstance(decision, Deny):
        await send_problem(send, decision.status, decision.reason, decision_id, decision.detail, decision.headers)
        return decision.status
    if isinstance(decision, Challenge):
        if ctx is not None and resolver is not None:
            url = resolver.challenge_url(ctx, decision)
        else:
            url = f"{prefix}captcha/challenge?level={decision.level}"
        if ctx is not None and page is not None and wants_html(ctx.header(b"accept")):
            body = page.render(challenge_url=url, level=decision.level, method=ctx.method, decision_id=decision_id)
            raw = [*_PAGE_HEADERS, (b"content-length", str(len(body)).encode()),
                   (b"tsgate-decision", decision_id.encode()),
                   *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers)]
            await send({"type": "http.response.start", "status": 403, "headers": raw})
            await send({"type": "http.response.body", "body": body if ctx.method != "HEAD" else b""})
            return 403
        headers = (("Tsgate-Mitigated", "challenge"), *decision.headers)
        await send_problem(
            send, 403, decision.reason, decision_id,
            decision.detail or "Solve the challenge, then retry with the clearance.",
            headers,
            challenge={"kind": decision.challenge, "level": decision.level, "url": url,
                       "verify_url": f"{prefix}captcha/verify", "clearance_header": CLEARANCE_HEADER},
        )
        return 403
    headers = (("Tsgate-Mitigated", "hold"), *decision.headers)
    await send_problem(
        send, 202, decision.reason, decision_id,
        decision.detail or "Your request is waiting for review; quote the decision id if you appeal.",
        headers,
        queue=decision.queue,
    )
    return 202
