"""review outbox: retries survive a restart (review_webhooks.next_attempt_at)

Every outgoing delivery of the review queue (webhooks and forwards of approved held requests) is
retried from the database: ``next_attempt_at`` says when a pending row is due (or, while an attempt
runs, when its lease ends). Rows written before this migration are pending with no due time: they
are due at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("review_webhooks", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_review_webhooks_state_next_attempt", "review_webhooks", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_review_webhooks_state_next_attempt", table_name="review_webhooks")
    with op.batch_alter_table("review_webhooks") as batch:  # batch: SQLite before 3.35 cannot drop columns
        batch.drop_column("next_attempt_at")
