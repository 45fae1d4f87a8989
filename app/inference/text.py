"""What the service accepts as report text (and as other free-text fields of a request)."""

from __future__ import annotations

import re

from app.errors import EmptyText, InvalidText, TextTooLong

# C0 and C1 control characters except tab, line feed and carriage return, and lone surrogates (JSON escapes such
# as "\ud800" decode to them; no encoder, tokenizer or database accepts them).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def forbidden_character(value: str) -> str | None:
    """A description of the first character that no typed text contains, or None when there is none."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    return f"U+{ord(match.group()):04X} at position {match.start()}"


def check_report_text(text: str, *, max_chars: int) -> None:
    """Raise the matching :class:`~app.errors.InvalidInput` when ``text`` cannot be classified."""
    if not text.strip():
        raise EmptyText("the text is empty or only whitespace")
    if len(text) > max_chars:
        raise TextTooLong(f"the text has {len(text)} characters; at most {max_chars} are accepted")
    problem = forbidden_character(text)
    if problem is not None:
        raise InvalidText(f"the text contains a control character or a lone surrogate ({problem})")
