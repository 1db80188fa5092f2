"""Responses tsgate writes itself: RFC 9457 problem+json for every refusal, always with the
decision id (body and ``Tsgate-Decision`` header) and ``Cache-Control: no-store``."""

from __future__ import annotations

from typing import Any

from gateway.core.decisions import Challenge, Deny, Hold
from gateway.core.problem import problem_body

__all__ = ["Send", "decision_response", "send_problem"]

Send = Any  # ASGI send callable

PROBLEM_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


async def send_problem(
    send: Send,
    status: int,
    reason: str,
    decision_id: str,
    detail: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> None:
    body = problem_body(status, reason, decision_id, detail, **extra)
    out = [
        *PROBLEM_HEADERS,
        (b"content-length", str(len(body)).encode()),
        (b"tsgate-decision", decision_id.encode()),
    ]
    out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


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
