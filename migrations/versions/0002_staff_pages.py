"""The staff pages: the next departments of each decision, and the index of the review queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.add_column(
            sa.Column(
                "department_alternatives",
                sa.JSON(),
                nullable=True,
                comment="[{label, score}] the next most likely departments",
            )
        )
        batch_op.create_index("ix_decisions_review_queue", ["needs_review", "severity", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.drop_index("ix_decisions_review_queue")
        batch_op.drop_column("department_alternatives")
