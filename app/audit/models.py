"""ORM models of the audit log: one row per routing decision, and the reviewers' corrections of it.

The schema is created and changed by Alembic only (``migrations/``); these classes describe it for queries.
Offsets of keyword spans in stored rows refer to the stored text (after redaction) where a text is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone: it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as strings: one zone-less format keeps range filters right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQL NULL for None (not the JSON literal null), so "not given" can be queried with IS NULL.
NullableJSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base of the audit models."""


class Decision(Base):
    """One routing decision as the service answered it."""

    __tablename__ = "decisions"
    __table_args__ = (
        # The staff pages' review queue: open decisions by severity, oldest first (app/audit/insights.py).
        Index("ix_decisions_review_queue", "needs_review", "severity", "created_at"),
        # The insights of a period: counts per department, day, sentiment and severity, and the feedback of each
        # decision (by id), from the index alone.
        Index("ix_decisions_insights", "created_at", "department", "sentiment", "severity", "id"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True, comment="the request id")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    client: Mapped[str] = mapped_column(String(128))
    case_id: Mapped[str | None] = mapped_column(String(256), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(64), index=True)
    department_score: Mapped[float] = mapped_column(Float)
    department_alternatives: Mapped[list[dict[str, Any]] | None] = mapped_column(
        NullableJSON, comment="[{label, score}] the next most likely departments"
    )
    sentiment: Mapped[str] = mapped_column(String(64))
    sentiment_score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(64))
    severity_score: Mapped[float] = mapped_column(Float)
    keywords: Mapped[list[dict[str, Any]]] = mapped_column(JSON, comment="[{type, start, end, score}]")
    needs_review: Mapped[bool] = mapped_column(index=True)
    routed_to: Mapped[str] = mapped_column(String(256))
    latency_ms: Mapped[float] = mapped_column(Float)
    text_storage: Mapped[str] = mapped_column(String(16), comment="redacted, hash or none (at write time)")
    text: Mapped[str | None] = mapped_column(Text, comment="the redacted text (text_storage redacted)")
    text_sha256: Mapped[str | None] = mapped_column(String(64), comment="sha256 of the text as sent (hash)")
    text_chars: Mapped[int] = mapped_column(Integer, comment="length of the text as sent")
    redactions: Mapped[list[dict[str, Any]] | None] = mapped_column(
        NullableJSON, comment="[{start, end, type}] replaced in the text as sent (positions only)"
    )
    text_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "metadata" is reserved on declarative classes; the column keeps the API's name.
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", NullableJSON)

    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="decision", order_by="Feedback.id", cascade="all, delete-orphan", passive_deletes=True
    )


class Feedback(Base):
    """A person's correction (or confirmation) of a decision; the latest one of a decision is the one in force."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("client", "idempotency_key_sha256", name="uq_feedback_client_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    client: Mapped[str] = mapped_column(String(128))
    reviewer: Mapped[str | None] = mapped_column(String(256))
    department: Mapped[str | None] = mapped_column(String(64))
    sentiment: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str | None] = mapped_column(String(64))
    keywords: Mapped[list[dict[str, Any]] | None] = mapped_column(NullableJSON, comment="[{type, start, end}]")
    idempotency_key_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="sha256 of the client's Idempotency-Key header"
    )
    request_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="sha256 of the request, to tell a retry from a reused key"
    )

    decision: Mapped[Decision] = relationship(back_populates="feedback")


class DecisionKeyword(Base):
    """One keyword of a decision, cut out of its stored (redacted) text when the decision was written: the
    insights count keywords per department and period from here instead of parsing every stored text.
    Only decisions with a stored text have rows, and retention removes them with the text."""

    __tablename__ = "decision_keywords"
    # The counts of a period from the index alone.
    __table_args__ = (Index("ix_decision_keywords_period", "created_at", "department", "type", "keyword"),)

    request_id: Mapped[str] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, comment="the span's place among the decision's")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="the decision's time")
    department: Mapped[str] = mapped_column(String(64), comment="the department the model chose")
    type: Mapped[str] = mapped_column(String(64), comment="PLATS, OBJEKT, ...")
    keyword: Mapped[str] = mapped_column(String(200), comment="as written in the stored text, spaces collapsed")
