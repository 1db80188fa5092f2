"""Responses tsgate writes itself: RFC 9457 problem+json for every refusal, always with the
decision id (body and ``Tsgate-Decision`` header) and ``Cache-Control: no-store``."""

from __future__ import annotations

from typing import Any

from gateway.core.asgi import send_problem
from gateway.core.decisions import Challenge, Deny, Hold

__all__ = ["Send", "decision_response", "send_problem"]

Send = Any  # ASGI send callable

async def decision_response(
    send: Send, decision: Deny | Challenge | Hold, decision_id: str, prefix: str
) -> int:
    """Render a stopping decision; return the status sent."""
    if isinstance(decision, Deny):
        await send_problem(send, decision.status, decision.reason, decision_id, decision.detail, decision.headers)
        return decision.status
    if isinstance(decision, Challenge):
        headers = (("Tsgate-Mitigated", "challenge"), *decision.headers)
        await send_problem(
            send, 403, decision.reason, decision_id,
            decision.detail or "Solve the challenge, then retry with the clearance.",
            headers,
            challenge={"kind": decision.challenge, "level": decision.level, "url": f"{prefix}captcha/challenge"},
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
