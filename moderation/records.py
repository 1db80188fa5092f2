"""Review records: the durable queue table that flags, holds, blocks (and later follow detections
and appeals) are written to, and the writer the moderation guard uses.

The table is on authn's declarative ``Base`` — one metadata, one Alembic history, one database
per deployment — and is created by migration ``0002_review_queue``. The review-queue API and
moderator UI build on it: items are claimed with a lease (``lease_owner``/``lease_expires_at``)
so two moderators never work the same item, and resolved with a resolution that doubles as a
training label (``tsgate moderation train`` learns from moderators' decisions).

``ReviewQueue.enqueue`` returns only after the transaction committed: a hold is durable before
its 202 is sent. On database errors it retries with exponential backoff until a deadline (2 s by
default, and at most ``attempts`` tries): a database restart or failover shorter than that costs
the client a short wait instead of a 503, and a longer outage is a ``ReviewQueueError`` (the
guard answers 503) within the deadline, whatever the driver's own connect timeout. It is
idempotent per ``(kind, decision_id)`` (a retry after a commit whose acknowledgement was lost
finds the row and returns it instead of failing or writing twice)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from authn.db import Database
from authn.models import Base, UTCDateTime
from gateway.core.errors import StoreError
from moderation.errors import ReviewQueueError
from moderation.sinks import NewReviewItem, ReviewSink

__all__ = ["ITEM_KINDS", "ITEM_STATES", "NewReviewItem", "ReviewItem", "ReviewQueue", "ReviewSink"]

log = logging.getLogger("tsgate.moderation")

ITEM_KINDS = ("content", "follow", "appeal")
ITEM_STATES = ("open", "claimed", "resolved")
ITEM_ACTIONS = ("flag", "hold", "challenge", "block", "appeal")


class ReviewItem(Base):
    __tablename__ = "review_items"
    __table_args__ = (
        CheckConstraint("kind IN ('content', 'follow', 'appeal')", name="kind"),
        CheckConstraint("state IN ('open', 'claimed', 'resolved')", name="state"),
        CheckConstraint("action IN ('flag', 'hold', 'challenge', 'block', 'appeal')", name="action"),
        UniqueConstraint("kind", "decision_id", name="uq_review_items_kind_decision"),
        # The claim query: oldest open item of the highest priority.
        Index("ix_review_items_state_priority_created", "state", "priority", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    group_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # campaign / job
    state: Mapped[str] = mapped_column(String(16), default="open")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    decision_id: Mapped[str] = mapped_column(String(64), index=True)
    principal_id: Mapped[str] = mapped_column(String(256), index=True)
    principal_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    shadow: Mapped[int] = mapped_column(Integer, default=0)  # 1: what a shadow rule would have done
    content: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"fields": [{"field", "text"}], ...}
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # holds: to forward on approval
    symbols: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"name", "weight", "evidence"}]
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    upstream_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # flags: what the backend said
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)  # e.g. spam | ham | auto
    resolved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewQueue:
    """The SQLAlchemy writer of ``review_items`` (SQLite or PostgreSQL via ``authn.db.Database``)."""

    def __init__(self, database: Database, *, attempts: int = 12, backoff: float = 0.05, max_backoff: float = 0.4,
                 deadline: float = 2.0) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not deadline > 0:
            raise ValueError("deadline must be positive")
        self.database = database
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.deadline = deadline

    async def enqueue(self, item: NewReviewItem) -> str:
        """Insert and commit. On database errors, retry with exponential backoff (``backoff``
        doubling up to ``max_backoff``) for at most ``attempts`` tries and ``deadline`` seconds in
        all; each try is cut off when the deadline passes (a connect that hangs counts as a failure)."""
        last: Exception | None = None
        give_up = time.monotonic() + self.deadline
        tries = 0
        while tries < self.attempts:
            tries += 1
            remaining = give_up - time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    return await self._insert(item)
            except StoreError as exc:  # AuthnStoreError: translated SQLAlchemy/driver/network errors
                last = exc
            except TimeoutError:
                last = TimeoutError(f"no answer within the {self.deadline:g}s deadline")
                break
            pause = min(self.backoff * (2 ** (tries - 1)), self.max_backoff)
            if tries >= self.attempts or time.monotonic() + pause >= give_up:
                break
            log.warning("review queue: writing the %s for decision %s failed (try %d: %s); retrying",
                        item.action, item.decision_id, tries, last)
            await asyncio.sleep(pause)
        raise ReviewQueueError(f"review queue: {item.action} for decision {item.decision_id} not written after "
                               f"{tries} attempts in {self.deadline:g}s ({last})") from last

    async def _insert(self, item: NewReviewItem) -> str:
        item_id = uuid.uuid4().hex
        row = ReviewItem(
            id=item_id, kind=item.kind, group_id=item.group_id, state=item.state, priority=item.priority,
            score=item.score, rule_id=item.rule_id[:128], decision_id=item.decision_id,
            principal_id=item.principal_id[:256], principal_kind=item.principal_kind[:16], action=item.action,
            shadow=int(item.shadow), content=dict(item.content),
            request=dict(item.request) if item.request is not None else None,
            symbols=[dict(s) for s in item.symbols], model_version=item.model_version,
            upstream_status=item.upstream_status, resolution=item.resolution,
            resolved_by="tsgate" if item.state == "resolved" else None,
            created_at=item.created_at, updated_at=item.created_at,
        )
        try:
            async with self.database.transaction() as session:
                session.add(row)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            # Already written (a retry after a lost commit acknowledgement): return that row.
            existing = await self.find(item.kind, item.decision_id)
            if existing is None:
                raise
            return existing.id
        return item_id

    async def find(self, kind: str, decision_id: str) -> ReviewItem | None:
        """The item of ``kind`` for ``decision_id`` (appeals and tests look records up this way)."""
        async with self.database.transaction() as session:
            result = await session.execute(
                select(ReviewItem).where(ReviewItem.kind == kind, ReviewItem.decision_id == decision_id))
            return result.scalar_one_or_none()
