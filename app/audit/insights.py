"""Read-only queries of the staff pages: the review queue and the insights over a period.

Every query is bounded: the queue reads one page through the index ``ix_decisions_review_queue``; the insights
read the decisions (and their keywords) of one period through the indexes on ``created_at`` and group them in the
database (days in the staff's time zone). Data-access functions take a SQLAlchemy ``Session`` and keyword-only
arguments.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, case, func, literal, select
from sqlalchemy.orm import Session

from app.audit.models import Decision, DecisionKeyword
from app.audit.repository import department_judgements

KEYWORDS_PER_DEPARTMENT = 5
# SQLite's planner prefers the department index for the GROUP BY and then reads the whole log; the period's
# range of this index reads only the period, and holds every column the counts need.
_BY_TIME = "INDEXED BY ix_decisions_insights"


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
    a constant offset. Found day by day, then the hour of each change (zones change offsets on whole UTC hours)."""

    def offset_at(moment: datetime) -> timedelta:
        return moment.astimezone(zone).utcoffset() or timedelta(0)

    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    segments = [(since, offset_at(moment))]
    while moment < until:
        next_day = min(moment + timedelta(days=1), until)
        if offset_at(next_day) != segments[-1][1]:
            hour = moment
            while (hour := hour + timedelta(hours=1)) <= next_day:
                if (offset := offset_at(hour)) != segments[-1][1]:
                    segments.append((hour, offset))
        moment = next_day
    return segments


def _local_day(session: Session, zone: ZoneInfo, since: datetime, until: datetime) -> tuple[Any, Any]:
    """SQL expressions whose pair is the decision's calendar day in ``zone``: (a day, days to add to it)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(zone.key, Decision.created_at)), literal(0)
    # SQLite knows no time zones, and parsing every timestamp is slow: the UTC date is the text's first 10
    # characters, and the hour plus the zone's offset at the time (one CASE branch per stretch) says whether
    # the local day is the day before or after it. Offsets are taken in whole hours.
    segments = utc_offset_segments(zone, since, until)
    hours = [(start, int(offset.total_seconds() // 3600)) for start, offset in segments]
    shift: Any = literal(hours[-1][1])
    if len(hours) > 1:
        stretches = zip(hours, hours[1:], strict=False)
        shift = case(*((Decision.created_at < end, offset) for (_, offset), (end, _) in stretches), else_=hours[-1][1])
    hour = func.cast(func.substr(Decision.created_at, 12, 2), Integer)
    return func.substr(Decision.created_at, 1, 10), (hour + shift + 24) // 24 - 1


def _as_date(value: Any, days: Any) -> date:
    day = value if isinstance(value, date) else date.fromisoformat(str(value))
    return day + timedelta(days=int(days))


def daily_counts(session: Session, *, zone: ZoneInfo, since: datetime, until: datetime) -> list[DayCounts]:
    """Decisions made in ``[since, until)`` per department and local day, with their review counts."""
    day_expression, shift_expression = _local_day(session, zone, since, until)
    day, shift = day_expression.label("day"), shift_expression.label("shift")
    in_period = [Decision.created_at >= since, Decision.created_at < until]
    reviewed = case((Decision.feedback.any(), 1), else_=0)
    totals = (
        select(Decision.department, day, shift, func.count(), func.sum(reviewed))
        .where(*in_period)
        .with_hint(Decision, _BY_TIME, "sqlite")
    )
    # Driven by the judged decisions (few) and joined by primary key: an outer join of every decision to the
    # windowed subquery would be a nested loop over it on SQLite.
    judged = department_judgements(*in_period)
    agreement = (
        select(
            Decision.department,
            day,
            shift,
            func.count(),
            func.sum(case((judged.c.reviewed == Decision.department, 1), else_=0)),
        )
        .select_from(judged)
        .join(Decision, Decision.id == judged.c.request_id)
        .where(judged.c.rank == 1)
    )
    counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for department, utc_day, days, total, reviewed_n in session.execute(
        totals.group_by(Decision.department, day, shift)
    ):
        values = counts[department, _as_date(utc_day, days)]
        values[0] += int(total)
        values[1] += int(reviewed_n or 0)
    grouped = agreement.group_by(Decision.department, day, shift)
    for department, utc_day, days, judged_n, agreed in session.execute(grouped):
        values = counts[department, _as_date(utc_day, days)]
        values[2] += int(judged_n)
        values[3] += int(agreed or 0)
    return [DayCounts(department, day_, *values) for (department, day_), values in counts.items()]


def _label_mix(session: Session, column: Any, since: datetime, until: datetime) -> dict[str, Counter[str]]:
    query = (
        select(Decision.department, column, func.count())
        .where(Decision.created_at >= since, Decision.created_at < until)
        .with_hint(Decision, _BY_TIME, "sqlite")
        .group_by(Decision.department, column)
    )
    mix: dict[str, Counter[str]] = defaultdict(Counter)
    for department, label, count in session.execute(query):
        mix[department][label] = int(count)
    return dict(mix)


def top_keywords(
    session: Session, *, since: datetime, until: datetime, limit: int = KEYWORDS_PER_DEPARTMENT
) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """The most frequent keywords per department and type over ``[since, until)``, from the keywords cut out of
    the stored (redacted) texts; a keyword is counted case-insensitively and shown as most often written."""
    query = (
        select(DecisionKeyword.department, DecisionKeyword.type, DecisionKeyword.keyword, func.count())
        .where(DecisionKeyword.created_at >= since, DecisionKeyword.created_at < until)
        .group_by(DecisionKeyword.department, DecisionKeyword.type, DecisionKeyword.keyword)
    )
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for department, keyword_type, shown, count in session.execute(query):
        key = shown.casefold()
        counts[department, keyword_type][key] += count
        spellings[key][shown] += count
    top: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(dict)
    for (department, keyword_type), counter in counts.items():
        top[department][keyword_type] = [
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
