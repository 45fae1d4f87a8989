"""Read-only queries of the staff pages: the review queue and the insights over a period.

Every query is bounded: the queue reads one page through the index ``ix_decisions_review_queue``; the insights
read the decisions of one period through the index on ``created_at`` and group them in the database (days in the
staff's time zone). Data-access functions take a SQLAlchemy ``Session`` and keyword-only arguments.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from app.audit.models import Decision
from app.audit.repository import department_judgements

KEYWORDS_PER_DEPARTMENT = 5


# --- the review queue ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePage:
    """One page of the review queue, and how many open decisions there are per severity (after the filters)."""

    items: list[Decision]
    total: int
    by_severity: dict[str, int]


def _open_for_review(department: str | None, severity: str | None) -> list[ColumnElement[bool]]:
    conditions = [Decision.needs_review.is_(True), ~Decision.feedback.any()]
    if department is not None:
        conditions.append(Decision.department == department)
    if severity is not None:
        conditions.append(Decision.severity == severity)
    return conditions


def review_queue(
    session: Session,
    *,
    severity_order: Sequence[str],
    department: str | None = None,
    severity: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> QueuePage:
    """Decisions that need review and have no feedback yet: most severe first (``severity_order`` lists the
    severities most severe first; others follow), then oldest first.

    The page is read severity by severity, each in ``created_at`` order straight from the queue index, so a page
    costs the same however long the queue is (one ordered index range per severity the page touches).
    """
    conditions = _open_for_review(department, severity)
    counts = dict(
        session.execute(select(Decision.severity, func.count()).where(*conditions).group_by(Decision.severity)).all()
    )
    rank = {label: position for position, label in enumerate(severity_order)}
    buckets = sorted(counts, key=lambda label: (rank.get(label, len(rank)), label))
    items: list[Decision] = []
    skip, wanted = offset, limit
    for bucket in buckets:
        if wanted == 0:
            break
        if skip >= counts[bucket]:
            skip -= counts[bucket]
            continue
        query = (
            select(Decision)
            .where(*conditions, Decision.severity == bucket)
            .order_by(Decision.created_at, Decision.id)
            .limit(wanted)
            .offset(skip)
        )
        page = list(session.scalars(query))
        items.extend(page)
        wanted -= len(page)
        skip = 0
    return QueuePage(items=items, total=sum(counts.values()), by_severity={b: counts[b] for b in buckets})


# --- insights ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayCounts:
    """Per department and local day: decisions, reviewed ones (any feedback), department judged, and agreed."""

    department: str
    day: date
    decisions: int
    reviewed: int
    judged: int
    agreed: int


@dataclass
class Insights:
    """What the insights page shows for one period ``[since, until)``."""

    since: datetime
    until: datetime
    days: list[DayCounts] = field(default_factory=list)
    sentiment_mix: dict[str, Counter[str]] = field(default_factory=dict)
    severity_mix: dict[str, Counter[str]] = field(default_factory=dict)
    # department -> keyword type -> [(keyword as most often written, count)], most frequent first
    top_keywords: dict[str, dict[str, list[tuple[str, int]]]] = field(default_factory=dict)


def utc_offset_segments(zone: ZoneInfo, since: datetime, until: datetime) -> list[tuple[datetime, timedelta]]:
    """The UTC offsets of ``zone`` in ``[since, until)``: ``[(from UTC instant, offset)]``, one per stretch with
    a constant offset (found hour by hour: zones change their offsets on whole UTC hours)."""
    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    offset = moment.astimezone(zone).utcoffset() or timedelta(0)
    segments = [(since, offset)]
    while (moment := moment + timedelta(hours=1)) < until:
        current = moment.astimezone(zone).utcoffset() or timedelta(0)
        if current != offset:
            segments.append((moment, current))
            offset = current
    return segments


def _local_day(session: Session, zone: ZoneInfo, since: datetime, until: datetime) -> ColumnElement[Any]:
    """A SQL expression of the decision's calendar day in ``zone``."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(zone.key, Decision.created_at))
    # SQLite knows no time zones: shift by the zone's offset at the time, one CASE branch per DST stretch.
    segments = utc_offset_segments(zone, since, until)
    if len(segments) == 1:
        return func.date(Decision.created_at, _seconds(segments[0][1]))
    stretches = zip(segments, segments[1:], strict=False)
    shift = case(
        *((Decision.created_at < end, _seconds(offset)) for (_, offset), (end, _) in stretches),
        else_=_seconds(segments[-1][1]),
    )
    return func.date(Decision.created_at, shift)


def _seconds(offset: timedelta) -> str:
    return f"{int(offset.total_seconds()):+d} seconds"


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def daily_counts(session: Session, *, zone: ZoneInfo, since: datetime, until: datetime) -> list[DayCounts]:
    """Decisions made in ``[since, until)`` per department and local day, with their review counts."""
    day = _local_day(session, zone, since, until).label("day")
    in_period = [Decision.created_at >= since, Decision.created_at < until]
    judged = department_judgements(*in_period)
    reviewed = case((Decision.feedback.any(), 1), else_=0)
    query = (
        select(
            Decision.department,
            day,
            func.count(),
            func.sum(reviewed),
            func.count(judged.c.request_id),
            func.sum(case((judged.c.reviewed == Decision.department, 1), else_=0)),
        )
        .outerjoin(judged, (judged.c.request_id == Decision.id) & (judged.c.rank == 1))
        .where(*in_period)
        .group_by(Decision.department, day)
    )
    return [
        DayCounts(department, _as_date(local_day), int(total), int(reviewed or 0), int(judged_n), int(agreed or 0))
        for department, local_day, total, reviewed, judged_n, agreed in session.execute(query)
    ]


def _label_mix(session: Session, column: Any, since: datetime, until: datetime) -> dict[str, Counter[str]]:
    query = (
        select(Decision.department, column, func.count())
        .where(Decision.created_at >= since, Decision.created_at < until)
        .group_by(Decision.department, column)
    )
    mix: dict[str, Counter[str]] = defaultdict(Counter)
    for department, label, count in session.execute(query):
        mix[department][label] = int(count)
    return dict(mix)


def _normalised(keyword: str) -> str:
    return " ".join(keyword.split()).casefold()


def top_keywords(
    session: Session, *, since: datetime, until: datetime, limit: int = KEYWORDS_PER_DEPARTMENT
) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """The most frequent keywords per department and type over ``[since, until)``, read from the stored
    (redacted) texts; a keyword is counted case- and spacing-insensitively and shown as most often written."""
    query = (
        select(Decision.department, Decision.text, Decision.keywords)
        .where(Decision.created_at >= since, Decision.created_at < until, Decision.text.is_not(None))
        .execution_options(yield_per=2000)
    )
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for department, text, keywords in session.execute(query):
        for keyword in keywords:
            written = " ".join(text[keyword["start"] : keyword["end"]].split())
            if written:
                key = _normalised(written)
                counts[department, keyword["type"]][key] += 1
                spellings[key][written] += 1
    top: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(dict)
    for (department, kind), counter in counts.items():
        top[department][kind] = [
            (spellings[key].most_common(1)[0][0], count)
            for key, count in sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]
        ]
    return dict(top)


def insights(session: Session, *, zone: ZoneInfo, since: datetime, until: datetime) -> Insights:
    """Everything the insights page shows for ``[since, until)``."""
    return Insights(
        since=since,
        until=until,
        days=daily_counts(session, zone=zone, since=since, until=until),
        sentiment_mix=_label_mix(session, Decision.sentiment, since, until),
        severity_mix=_label_mix(session, Decision.severity, since, until),
        top_keywords=top_keywords(session, since=since, until=until),
    )
