"""The staff pages: the next departments of each decision, the index of the review queue, and the keywords of
stored texts (filled here for the decisions already in the log).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
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
        batch_op.create_index("ix_decisions_insights", ["created_at", "department", "sentiment", "severity", "id"])
    keywords = op.create_table(
        "decision_keywords",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, comment="the span's place among the decision's"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="the decision's time"),
        sa.Column("department", sa.String(length=64), nullable=False, comment="the department the model chose"),
        sa.Column("type", sa.String(length=64), nullable=False, comment="PLATS, OBJEKT, ..."),
        sa.Column(
            "keyword", sa.String(length=200), nullable=False, comment="as written in the stored text, spaces collapsed"
        ),
        sa.ForeignKeyConstraint(["request_id"], ["decisions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "position"),
    )
    with op.batch_alter_table("decision_keywords") as batch_op:
        batch_op.create_index("ix_decision_keywords_period", ["created_at", "department", "type", "keyword"])
    _fill_keywords(keywords)


def _fill_keywords(keywords: sa.Table) -> None:
    """Keyword rows of the decisions already stored (the same cut as app.audit.repository.keyword_rows)."""
    from app.audit.repository import keyword_rows

    decisions = sa.table(
        "decisions",
        sa.column("id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("department", sa.String),
        sa.column("text", sa.Text),
        sa.column("keywords", sa.JSON),
    )
    connection = op.get_bind()
    query = sa.select(decisions).where(decisions.c.text.is_not(None))
    rows = []
    for decision in connection.execute(query.execution_options(yield_per=2000)).mappings():
        rows += keyword_rows(
            request_id=decision["id"],
            created_at=decision["created_at"],
            department=decision["department"],
            text=decision["text"],
            keywords=decision["keywords"],
        )
        if len(rows) >= 5000:
            connection.execute(sa.insert(keywords), rows)
            rows = []
    if rows:
        connection.execute(sa.insert(keywords), rows)


def downgrade() -> None:
    op.drop_table("decision_keywords")
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.drop_index("ix_decisions_insights")
        batch_op.drop_index("ix_decisions_review_queue")
        batch_op.drop_column("department_alternatives")
