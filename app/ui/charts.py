"""Charts of the staff pages, drawn on the server as SVG (nothing is loaded by the browser to draw them).

Colours are SVG presentation attributes, not ``style``: the pages' Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Tableau 10: distinguishable, also for the common colour-vision deficiencies.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OTHER_COLOUR = "#888888"
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Series:
    """One coloured series of a chart: its label (shown in the legend), colour and values."""

    label: str
    colour: str
    values: Sequence[float]


def _nice_maximum(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above ``value`` (a round top for the axis)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _legend(series: Sequence[Series], *, x: float, y: float, width: float) -> tuple[list[str], float]:
    """Legend items in rows within ``width``; the SVG parts and the height they take."""
    parts, column, row = [], 0.0, 0
    for item in series:
        item_width = 22 + 6.5 * len(item.label)
        if column and column + item_width > width:
            column, row = 0.0, row + 1
        left, top = x + column, y + row * 16
        parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="10" height="10" fill="{item.colour}"/>')
        parts.append(f'<text x="{left + 14:.1f}" y="{top + 9:.1f}" {_FONT}>{escape(item.label)}</text>')
        column += item_width
    return parts, (row + 1) * 16


def stacked_bars(
    categories: Sequence[str], series: Sequence[Series], *, title: str, width: int = 880, height: int = 260
) -> Markup:
    """Vertical bars per category, stacked by series (e.g. reports per day, stacked by department)."""
    left, right, top, bottom = 44, 10, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    top_value = _nice_maximum(max(totals, default=0))
    parts = _axis(left, top, plot_w, plot_h, top_value)
    slot = plot_w / max(len(categories), 1)
    bar_w = max(slot * 0.8, 1.0)
    label_every = max(1, round(len(categories) / 12))
    for i, category in enumerate(categories):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for item in series:
            value = item.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{item.colour}">'
                f"<title>{escape(category)}: {escape(item.label)} {value:g}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" {_FONT}>'
                f"{escape(category)}</text>"
            )
    legend, legend_h = _legend(series, x=left, y=height - 2, width=plot_w)
    return _svg(width, height + legend_h, title, parts + legend)


def lines(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    maximum: float = 1.0,
    percent: bool = True,
    width: int = 880,
    height: int = 220,
) -> Markup:
    """One line per series over the categories (e.g. review rate and agreement per week); NaN leaves a gap."""
    left, right, top, bottom = 44, 10, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = _axis(left, top, plot_w, plot_h, maximum, percent=percent)
    step = plot_w / max(len(categories) - 1, 1)
    label_every = max(1, round(len(categories) / 12))
    for i, category in enumerate(categories):
        if i % label_every == 0:
            parts.append(
                f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle" {_FONT}>'
                f"{escape(category)}</text>"
            )
    for item in series:
        points = [
            (left + i * step, top + plot_h * (1 - value / maximum))
            for i, value in enumerate(item.values)
            if value == value  # not NaN
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{item.colour}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{item.colour}"/>')
    legend, legend_h = _legend(series, x=left, y=height - 2, width=plot_w)
    return _svg(width, height + legend_h, title, parts + legend)


def share_bars(
    rows: Sequence[tuple[str, Mapping[str, int]]],
    order: Sequence[tuple[str, str, str]],
    *,
    title: str,
    width: int = 880,
) -> Markup:
    """One horizontal 100% bar per row, split by label (e.g. sentiment mix per department).
    ``order`` gives (label, shown name, colour) in the order the parts are drawn."""
    label_w, right, bar_h, gap = 190, 50, 16, 6
    plot_w = width - label_w - right
    parts: list[str] = []
    y = 4.0
    for name, counts in rows:
        total = sum(counts.values())
        parts.append(f'<text x="{label_w - 6}" y="{y + 12:.1f}" text-anchor="end" {_FONT}>{escape(name)}</text>')
        x = float(label_w)
        for label, shown, colour in order:
            count = counts.get(label, 0)
            if not total or not count:
                continue
            w = plot_w * count / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                f"<title>{escape(name)}: {escape(shown)} {count} ({count / total:.0%})</title></rect>"
            )
            x += w
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 12:.1f}" {_FONT}>{total}</text>')
        y += bar_h + gap
    series = [Series(shown, colour, ()) for _, shown, colour in order]
    legend, legend_h = _legend(series, x=label_w, y=y + 4, width=plot_w)
    return _svg(width, int(y + 8 + legend_h), title, parts + legend)


def _axis(left: float, top: float, plot_w: float, plot_h: float, maximum: float, *, percent: bool = False) -> list[str]:
    parts = []
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = top + plot_h * (1 - fraction)
        value = maximum * fraction
        label = f"{value:.0%}" if percent else f"{value:g}"
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd" stroke-width="1"/>'
        )
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{label}</text>')
    return parts


def _svg(width: float, height: float, title: str, parts: Sequence[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet"><title>{escape(title)}</title>{"".join(parts)}</svg>'
    )
