"""What a guard hands to the review queue: plain data (rules decide, sinks act), and the one-method
sink protocol. No database here: ``moderation.records.ReviewQueue`` is the SQLAlchemy sink, tests
use an in-memory fake, and the guard depends only on this module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = ["ItemAction", "ItemKind", "ItemState", "NewReviewItem", "ReviewSink"]

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
