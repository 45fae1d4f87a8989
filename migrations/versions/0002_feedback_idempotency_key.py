"""Feedback: an Idempotency-Key per client makes a retried POST safe.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
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
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.add_column(
            sa.Column(
                "idempotency_key_sha256",
                sa.String(length=64),
                nullable=True,
                comment="sha256 of the client's Idempotency-Key header",
            )
        )
        batch_op.add_column(
            sa.Column(
                "request_sha256",
                sa.String(length=64),
                nullable=True,
                comment="sha256 of the request, to tell a retry from a reused key",
            )
        )
        batch_op.create_unique_constraint(
            "uq_feedback_client_idempotency_key", ["client", "idempotency_key_sha256"]
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.drop_constraint("uq_feedback_client_idempotency_key", type_="unique")
        batch_op.drop_column("request_sha256")
        batch_op.drop_column("idempotency_key_sha256")
