"""View models of the staff pages: audit rows and insight counts turned into what the templates show."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from app.artifact import SPAN_TASK, Manifest
from app.audit.insights import Insights
from app.audit.models import Decision
from app.audit.repository import is_confirmation
from app.ui import charts

SENTIMENT_COLOURS = {"negativ": "#e15759", "neutral": "#bab0ac", "positiv": "#59a14f"}
SEVERITY_COLOURS = {"lag": "#a0cbe8", "medel": "#edc948", "hog": "#f28e2b", "akut": "#b22222"}


@dataclass(frozen=True)
class Taxonomy:
    """The served model's labels with their Swedish names, in the model's order."""

    departments: dict[str, str]
    sentiments: dict[str, str]
    severities: dict[str, str]  # least severe first
    keyword_types: dict[str, str]

    @classmethod
    def of(cls, manifest: Manifest) -> Taxonomy:
        def names(task: str) -> dict[str, str]:
            return {label.id: label.name for label in manifest.tasks[task].labels}

        return cls(names("department"), names("sentiment"), names("severity"), names(SPAN_TASK))

    @property
    def most_severe_first(self) -> list[str]:
        return list(reversed(self.severities))

    def department_colour(self, label: str) -> str:
        position = list(self.departments).index(label) if label in self.departments else -1
        return charts.PALETTE[position % len(charts.PALETTE)] if position >= 0 else charts.OTHER_COLOUR


@dataclass(frozen=True)
class Segment:
    """A piece of the stored text: a keyword of a type, or plain text (type None)."""

    text: str
    type: str | None = None


def highlighted(text: str, keywords: Sequence[Mapping[str, Any]]) -> list[Segment]:
    """The stored text cut into plain pieces and keyword spans (offsets into the stored text, in order)."""
    segments, position = [], 0
    for keyword in sorted(keywords, key=lambda k: k["start"]):
        start, end = max(keyword["start"], position), min(keyword["end"], len(text))
        if start >= end:
            continue
        if start > position:
            segments.append(Segment(text[position:start]))
        segments.append(Segment(text[start:end], keyword["type"]))
        position = end
    if position < len(text):
        segments.append(Segment(text[position:]))
    return segments


def age(moment: datetime, now: datetime) -> str:
    """How long ago, in Swedish: "12 min", "5 tim", "3 dagar"."""
    minutes = max(int((now - moment).total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} tim"
    return f"{minutes // (24 * 60)} dagar"


@dataclass(frozen=True)
class DecisionView:
    """One decision as the queue and the decision page show it (the stored, redacted text only)."""

    request_id: str
    case_id: str | None
    created_at: datetime
    age: str
    segments: list[Segment] | None  # None where no text is stored
    text_note: str
    department: str
    department_name: str
    department_score: float
    alternatives: list[tuple[str, float]]
    sentiment: str
    sentiment_name: str
    severity: str
    severity_name: str
    needs_review: bool
    routed_to: str
    model_version: str


_TEXT_NOTES = {
    "hash": "Texten sparas inte (endast kontrollsumma).",
    "none": "Texten sparas inte.",
}


def decision_view(decision: Decision, taxonomy: Taxonomy, *, zone: ZoneInfo, now: datetime) -> DecisionView:
    if decision.text_purged_at is not None:
        note = "Texten är gallrad."
    else:
        note = _TEXT_NOTES.get(decision.text_storage, "")
    return DecisionView(
        request_id=decision.id,
        case_id=decision.case_id,
        created_at=decision.created_at.astimezone(zone),
        age=age(decision.created_at, now),
        segments=None if decision.text is None else highlighted(decision.text, decision.keywords),
        text_note=note,
        department=decision.department,
        department_name=taxonomy.departments.get(decision.department, decision.department),
        department_score=decision.department_score,
        alternatives=[
            (taxonomy.departments.get(other["label"], other["label"]), other["score"])
            for other in decision.department_alternatives or []
        ],
        sentiment=decision.sentiment,
        sentiment_name=taxonomy.sentiments.get(decision.sentiment, decision.sentiment),
        severity=decision.severity,
        severity_name=taxonomy.severities.get(decision.severity, decision.severity),
        needs_review=decision.needs_review,
        routed_to=decision.routed_to,
        model_version=decision.model_version,
    )


@dataclass(frozen=True)
class FeedbackView:
    created_at: datetime
    reviewer: str | None
    client: str
    what: str


def feedback_views(decision: Decision, taxonomy: Taxonomy, *, zone: ZoneInfo) -> list[FeedbackView]:
    """A decision's feedback, oldest first, each summarised in Swedish."""
    views = []
    for feedback in decision.feedback:
        if is_confirmation(feedback):
            what = "Bekräftade beslutet"
        else:
            changes = []
            if feedback.department is not None:
                changes.append(f"förvaltning: {taxonomy.departments.get(feedback.department, feedback.department)}")
            if feedback.severity is not None:
                changes.append(f"allvarlighet: {taxonomy.severities.get(feedback.severity, feedback.severity)}")
            if feedback.sentiment is not None:
                changes.append(f"ton: {taxonomy.sentiments.get(feedback.sentiment, feedback.sentiment)}")
            if feedback.keywords is not None:
                changes.append(f"nyckelord: {len(feedback.keywords)}")
            what = "Rättade " + ", ".join(changes)
        views.append(FeedbackView(feedback.created_at.astimezone(zone), feedback.reviewer, feedback.client, what))
    return views


# --- insights ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewCell:
    """Review rate and agreement of one department in one week (None where nothing was reviewed/judged)."""

    decisions: int
    review_rate: float | None
    agreement: float | None


@dataclass(frozen=True)
class InsightsView:
    period_days: int
    daily_chart: Markup
    weekly_chart: Markup
    weeks: list[str]
    weekly_counts: list[tuple[str, list[int], int]]  # department name, count per week, total
    sentiment_chart: Markup
    severity_chart: Markup
    keywords: list[tuple[str, dict[str, list[tuple[str, int]]]]]  # department name, type -> top keywords
    keyword_types: dict[str, str]
    review_chart: Markup
    review_table: list[tuple[str, list[ReviewCell]]]
    total_decisions: int


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week_label(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"v{week} {year}" if monday.month == 1 and week == 1 else f"v{week}"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def insights_view(data: Insights, taxonomy: Taxonomy, *, zone: ZoneInfo) -> InsightsView:
    """Charts and tables of the insights page."""
    first = data.since.astimezone(zone).date()
    last = (data.until.astimezone(zone) - timedelta(microseconds=1)).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    mondays = sorted({_week_start(day) for day in days})
    present = {row.department for row in data.days} | set(data.sentiment_mix) | set(data.severity_mix)
    departments = [label for label in taxonomy.departments if label in present] + sorted(
        present - set(taxonomy.departments)
    )
    names = {label: taxonomy.departments.get(label, label) for label in departments}

    per_day: dict[tuple[str, date], int] = defaultdict(int)
    per_week: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in data.days:
        per_day[row.department, row.day] += row.decisions
        counts = per_week[row.department, _week_start(row.day)]
        for position, value in enumerate((row.decisions, row.reviewed, row.judged, row.agreed)):
            counts[position] += value

    def department_series(values: Any) -> list[charts.Series]:
        return [charts.Series(names[d], taxonomy.department_colour(d), values(d)) for d in departments]

    day_labels = [day.strftime("%d/%m") for day in days]
    week_labels = [week_label(monday) for monday in mondays]
    daily_chart = charts.stacked_bars(
        day_labels,
        department_series(lambda d: [per_day.get((d, day), 0) for day in days]),
        title="Ärenden per dag och förvaltning",
    )
    weekly_chart = charts.stacked_bars(
        week_labels,
        department_series(lambda d: [per_week[d, monday][0] if (d, monday) in per_week else 0 for monday in mondays]),
        title="Ärenden per vecka och förvaltning",
    )
    weekly_counts = []
    for d in departments:
        counts = [per_week[d, monday][0] if (d, monday) in per_week else 0 for monday in mondays]
        weekly_counts.append((names[d], counts, sum(counts)))

    sentiment_order = [
        (label, name, SENTIMENT_COLOURS.get(label, charts.OTHER_COLOUR)) for label, name in taxonomy.sentiments.items()
    ]
    severity_order = [
        (label, name, SEVERITY_COLOURS.get(label, charts.OTHER_COLOUR)) for label, name in taxonomy.severities.items()
    ]
    sentiment_chart = charts.share_bars(
        [(names[d], data.sentiment_mix.get(d, {})) for d in departments], sentiment_order, title="Ton per förvaltning"
    )
    severity_chart = charts.share_bars(
        [(names[d], data.severity_mix.get(d, {})) for d in departments],
        severity_order,
        title="Allvarlighet per förvaltning",
    )

    totals = [[0, 0, 0, 0] for _ in mondays]
    review_table = []
    for d in departments:
        cells = []
        for position, monday in enumerate(mondays):
            decisions, reviewed, judged, agreed = per_week.get((d, monday), [0, 0, 0, 0])
            for i, value in enumerate((decisions, reviewed, judged, agreed)):
                totals[position][i] += value
            cells.append(ReviewCell(decisions, _rate(reviewed, decisions), _rate(agreed, judged)))
        review_table.append((names[d], cells))
    review_chart = charts.lines(
        week_labels,
        [
            charts.Series("Andel granskade", "#4e79a7", [_nan(_rate(t[1], t[0])) for t in totals]),
            charts.Series(
                "Granskarnas överensstämmelse med modellen", "#59a14f", [_nan(_rate(t[3], t[2])) for t in totals]
            ),
        ],
        title="Granskning per vecka",
    )
    keywords = [(names[d], data.top_keywords[d]) for d in departments if d in data.top_keywords]
    return InsightsView(
        period_days=len(days),
        daily_chart=daily_chart,
        weekly_chart=weekly_chart,
        weeks=week_labels,
        weekly_counts=weekly_counts,
        sentiment_chart=sentiment_chart,
        severity_chart=severity_chart,
        keywords=keywords,
        keyword_types=taxonomy.keyword_types,
        review_chart=review_chart,
        review_table=review_table,
        total_decisions=sum(row.decisions for row in data.days),
    )


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
