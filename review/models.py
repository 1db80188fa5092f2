"""The review tables next to ``review_items`` (on authn's ``Base``, migration ``0003``): moderators'
decisions, the append-only audit log, and outgoing deliveries — webhooks and forwards of approved
held requests — with their dead letters (the outbox, ``review.outbox``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authn.models import Base, UTCDateTime

__all__ = ["DECISIONS", "AuditEntry", "Decision", "WebhookDelivery"]

DECISIONS = ("approve", "remove", "ban_account", "false_positive", "escalate")


class Decision(Base):
    """One moderator decision on one item. An item has at most one final decision (escalations may
    precede it)."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        CheckConstraint("decision IN ('approve', 'remove', 'ban_account', 'false_positive', 'escalate')",
                        name="decision"),
        Index("ix_review_decisions_moderator_created", "moderator", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(32), ForeignKey("review_items.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    moderator: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    effects: Mapped[dict[str, Any]] = mapped_column(JSON)  # what acting on it did (forward status, bans...)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Append-only: rows are inserted, never updated or deleted (nothing in tsgate issues either)."""

    __tablename__ = "review_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class WebhookDelivery(Base):
    """An outgoing delivery (a webhook event, or the forward of an approved held request, event
    ``forward``): pending → delivered, or dead after its last failed attempt. ``next_attempt_at``
    (migration ``0004``): when a pending row is due; while an attempt runs, the end of its lease."""

    __tablename__ = "review_webhooks"
    __table_args__ = (CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
                      Index("ix_review_webhooks_state_next_attempt", "state", "next_attempt_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    item_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(1024))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
