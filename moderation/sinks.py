"""What a guard hands to the review queue: plain data (rules decide, sinks act), and the one-method
sink protocol. No database here: ``moderation.records.ReviewQueue`` is the SQLAlchemy sink, tests
use an in-memory fake, and the guard depends only on this module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = ["UNSTORED_HEADERS", "ItemAction", "ItemKind", "ItemState", "NewReviewItem", "ReviewSink"]

# Headers never stored with a held request and never replayed from one (lower case), whatever an
# older row holds: credentials (tsgate's own too) — an approved request is replayed with the
# author's identity re-asserted, the way tsgate does for live requests — and the framing, routing
# and forwarding headers that tsgate sets itself. (X-Tsgate-* headers are dropped by prefix.)
UNSTORED_HEADERS = frozenset({
    "authorization", "cookie", "proxy-authorization", "tsgate-clearance", "host", "content-length", "connection",
    "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect", "forwarded",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"})

ItemKind = Literal["content", "follow", "appeal"]
ItemAction = Literal["flag", "hold", "challenge", "block", "appeal"]
ItemState = Literal["open", "claimed", "resolved"]


@dataclass(frozen=True, slots=True)
class NewReviewItem:
    """What a guard hands to a sink: plain data, no ORM object (rules decide, sinks act)."""

    kind: ItemKind
    action: ItemAction
    rule_id: str
    decision_id: str
    principal_id: str
    principal_kind: str
    content: Mapping[str, Any]
    symbols: Sequence[Mapping[str, Any]]
    score: float | None = None
    priority: int = 0
    group_id: str | None = None
    request: Mapping[str, Any] | None = None
    model_version: str | None = None
    upstream_status: int | None = None
    state: ItemState = "open"
    resolution: str | None = None
    shadow: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ReviewSink(Protocol):
    """Where review items go. ``enqueue`` returns the item id once it is durable, or raises
    ``ReviewQueueError``. Tests use an in-memory fake; production uses ``ReviewQueue``."""

    async def enqueue(self, item: NewReviewItem) -> str: ...
