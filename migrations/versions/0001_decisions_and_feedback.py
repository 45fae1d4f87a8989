"""The audit log: routing decisions and reviewers' feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(length=128), nullable=False, comment="the request id"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("case_id", sa.String(length=256), nullable=True),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("department_score", sa.Float(), nullable=False),
        sa.Column("sentiment", sa.String(length=64), nullable=False),
        sa.Column("sentiment_score", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(length=64), nullable=False),
        sa.Column("severity_score", sa.Float(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False, comment="[{type, start, end, score}]"),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("routed_to", sa.String(length=256), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column(
            "text_storage", sa.String(length=16), nullable=False, comment="redacted, hash or none (at write time)"
        ),
        sa.Column("text", sa.Text(), nullable=True, comment="the redacted text (text_storage redacted)"),
        sa.Column(
            "text_sha256", sa.String(length=64), nullable=True, comment="sha256 of the text as sent (hash)"
        ),
        sa.Column("text_chars", sa.Integer(), nullable=False, comment="length of the text as sent"),
        sa.Column(
            "redactions",
            sa.JSON(),
            nullable=True,
            comment="[{start, end, type}] replaced in the text as sent (positions only)",
        ),
        sa.Column("text_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.create_index("ix_decisions_case_id", ["case_id"])
        batch_op.create_index("ix_decisions_created_at", ["created_at"])
        batch_op.create_index("ix_decisions_department", ["department"])
        batch_op.create_index("ix_decisions_needs_review", ["needs_review"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("reviewer", sa.String(length=256), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("sentiment", sa.String(length=64), nullable=True),
        sa.Column("severity", sa.String(length=64), nullable=True),
        sa.Column("keywords", sa.JSON(), nullable=True, comment="[{type, start, end}]"),
        sa.ForeignKeyConstraint(["request_id"], ["decisions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.create_index("ix_feedback_request_id", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("decisions")
