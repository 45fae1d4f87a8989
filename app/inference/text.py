"""What the service accepts as report text (and as other free-text fields of a request).

The same character classes decide here and in the OpenAPI document (``TYPED_TEXT_PATTERN``, ``REPORT_TEXT_PATTERN``),
so the contract declares exactly what is accepted.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache

from app.errors import EmptyText, InvalidText, TextTooLong

# C0 and C1 control characters except tab, line feed and carriage return; and lone surrogates (JSON escapes such
# as "\ud800" decode to them; no encoder, tokenizer or database accepts them). The patterns of the OpenAPI
# document name the controls only: a lone surrogate is no Unicode text, and schema validators cannot name it.
CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_FORBIDDEN = re.compile(f"[{CONTROL_CHARACTERS}\ud800-\udfff]")
# Any text without a control character (case ids, reviewers, metadata strings and keys).
TYPED_TEXT_PATTERN = f"^[^{CONTROL_CHARACTERS}]*$"


def _ranges(code_points: list[int]) -> str:
    """A regular-expression character class body for sorted code points."""
    parts = []
    start = previous = code_points[0]
    for point in [*code_points[1:], -1]:
        if point == previous + 1:
            previous = point
            continue
        parts.append(_escape(start) if start == previous else f"{_escape(start)}-{_escape(previous)}")
        start = previous = point
    return "".join(parts)


def _escape(point: int) -> str:
    return f"\\u{point:04x}" if point <= 0xFFFF else chr(point)


@lru_cache(maxsize=1)
def blank_characters() -> str:
    """Whitespace and format characters (zero-width space and joiners, direction marks, soft hyphen, BOM...):
    a text of nothing else is empty. A character class body."""
    points = [
        point for point in range(sys.maxunicode + 1) if chr(point).isspace() or unicodedata.category(chr(point)) == "Cf"
    ]
    return _ranges(points)


@lru_cache(maxsize=1)
def report_text_pattern() -> str:
    """A report text: no control character, and at least one that is neither blank nor a control character."""
    allowed = f"[^{CONTROL_CHARACTERS}]*"
    return f"^{allowed}[^{CONTROL_CHARACTERS}{blank_characters()}]{allowed}$"


@lru_cache(maxsize=1)
def _visible() -> re.Pattern[str]:
    return re.compile(f"[^{blank_characters()}]")


def forbidden_character(value: str) -> str | None:
    """A description of the first character that no typed text contains, or None when there is none."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    return f"U+{ord(match.group()):04X} at position {match.start()}"


def check_report_text(text: str, *, max_chars: int) -> None:
    """Raise the matching :class:`~app.errors.InvalidInput` when ``text`` cannot be classified."""
    if _visible().search(text) is None:
        raise EmptyText("the text is empty, or only whitespace and invisible format characters")
    if len(text) > max_chars:
        raise TextTooLong(f"the text has {len(text)} characters; at most {max_chars} are accepted")
    problem = forbidden_character(text)
    if problem is not None:
        raise InvalidText(f"the text contains a control character or a lone surrogate ({problem})")
