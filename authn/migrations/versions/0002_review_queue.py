"""review queue (moderation.records.ReviewItem)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("principal_id", sa.String(256), nullable=False),
        sa.Column("principal_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("shadow", sa.Integer(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("upstream_status", sa.Integer(), nullable=True),
        sa.Column("resolution", sa.String(32), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('content', 'follow', 'appeal')", name=op.f("ck_review_items_kind")),
        sa.CheckConstraint("state IN ('open', 'claimed', 'resolved')", name=op.f("ck_review_items_state")),
        sa.CheckConstraint("action IN ('flag', 'hold', 'challenge', 'block', 'appeal')",
                           name=op.f("ck_review_items_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("kind", "decision_id", name="uq_review_items_kind_decision"),
    )
    op.create_index(op.f("ix_review_items_group_id"), "review_items", ["group_id"])
    op.create_index(op.f("ix_review_items_decision_id"), "review_items", ["decision_id"])
    op.create_index(op.f("ix_review_items_principal_id"), "review_items", ["principal_id"])
    op.create_index("ix_review_items_state_priority_created", "review_items", ["state", "priority", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_review_items_state_priority_created", table_name="review_items")
    op.drop_index(op.f("ix_review_items_principal_id"), table_name="review_items")
    op.drop_index(op.f("ix_review_items_decision_id"), table_name="review_items")
    op.drop_index(op.f("ix_review_items_group_id"), table_name="review_items")
    op.drop_table("review_items")
