"""review console: decisions, append-only audit log, webhook deliveries (review.models)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("item_id", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("moderator", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("effects", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('approve', 'remove', 'ban_account', 'false_positive', 'escalate')",
                           name=op.f("ck_review_decisions_decision")),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"],
                                name=op.f("fk_review_decisions_item_id_review_items")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index(op.f("ix_review_decisions_item_id"), "review_decisions", ["item_id"])
    op.create_index("ix_review_decisions_moderator_created", "review_decisions", ["moderator", "created_at"])
    op.create_table(
        "review_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("item_id", sa.String(32), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_audit")),
    )
    op.create_index(op.f("ix_review_audit_at"), "review_audit", ["at"])
    op.create_index(op.f("ix_review_audit_actor"), "review_audit", ["actor"])
    op.create_index(op.f("ix_review_audit_item_id"), "review_audit", ["item_id"])
    op.create_table(
        "review_webhooks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("item_id", sa.String(32), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name=op.f("ck_review_webhooks_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_webhooks")),
    )
    op.create_index(op.f("ix_review_webhooks_item_id"), "review_webhooks", ["item_id"])
    op.create_index(op.f("ix_review_webhooks_state"), "review_webhooks", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_review_webhooks_state"), table_name="review_webhooks")
    op.drop_index(op.f("ix_review_webhooks_item_id"), table_name="review_webhooks")
    op.drop_table("review_webhooks")
    op.drop_index(op.f("ix_review_audit_item_id"), table_name="review_audit")
    op.drop_index(op.f("ix_review_audit_actor"), table_name="review_audit")
    op.drop_index(op.f("ix_review_audit_at"), table_name="review_audit")
    op.drop_table("review_audit")
    op.drop_index("ix_review_decisions_moderator_created", table_name="review_decisions")
    op.drop_index(op.f("ix_review_decisions_item_id"), table_name="review_decisions")
    op.drop_table("review_decisions")
