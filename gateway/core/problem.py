"""RFC 9457 problem details. Every refusal tsgate sends is one of these, with a stable reason id
and the decision id, and never internal detail (no tracebacks, no upstream addresses)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

__all__ = ["PROBLEM_TYPE_BASE", "problem_body"]

PROBLEM_TYPE_BASE = "https://tsgate.dev/problems/"


def problem_body(status: int, reason: str, decision_id: str, detail: str = "", **extra: Any) -> bytes:
    """The JSON body of a problem response. ``reason`` doubles as the ``type`` URI's last part."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + reason,
        "title": title,
        "status": status,
        "reason": reason,
        "decision_id": decision_id,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
