"""Markdown table cells and rows for the evaluation report and the model card."""

from __future__ import annotations


def format_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_row(*cells: str | float | None) -> str:
    """A Markdown table row: strings as they are, scores with three decimals, missing ones as '-'."""
    return "| " + " | ".join(cell if isinstance(cell, str) else format_score(cell) for cell in cells) + " |"
