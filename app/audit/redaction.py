"""Redaction of Swedish personal data before a text is stored.

Recognised (and replaced by a typed placeholder):

- personnummer and samordningsnummer (``[PERSONNUMMER]``): 10 or 12 digits (``YYMMDD-NNNN``, ``YYMMDD+NNNN``,
  ``YYMMDDNNNN``, ``YYYYMMDD-NNNN``, ``YYYYMMDDNNNN``) with a valid month, a day of 1-31 (61-91 for a
  samordningsnummer) and a valid Luhn check digit. The date and Luhn checks keep organisation numbers
  (month 20 or more), case numbers and other long numbers readable;
- Swedish phone numbers (``[TELEFON]``): a trunk ``0`` and 8-10 digits in all (``070-123 45 67``,
  ``08-123 456 78``, ``0480-123 45``, ``(08) 123 45 67``), or ``+46``/``0046`` and 7-9 digits
  (``+46 70 123 45 67``, ``+46 (0)8-123 456 78``). A leading ``dd-mm-yyyy`` date is not taken for a number;
- e-mail addresses (``[E-POST]``).

Not recognised: names and street addresses (no reliable pattern), numbers split by other separators
(``800101 1234``). Where detections overlap, the union is replaced, so no part of a detection survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PERSONNUMMER = "PERSONNUMMER"
TELEFON = "TELEFON"
E_POST = "E-POST"

_PERSONNUMMER = re.compile(r"(?<!\d)(?:18|19|20)?(?P<date>\d{6})[-+]?(?P<serial>\d{4})(?!\d)")
_NOT_A_DATE = r"(?!(?:0[1-9]|[12]\d|3[01])[-/.](?:0[1-9]|1[0-2])[-/.](?:19|20)\d\d(?!\d))"
_PHONE = re.compile(
    # National: trunk 0, then 7-9 digits with single spaces, hyphens or a slash between them.
    rf"(?<![\d/\-]){_NOT_A_DATE}(?:0[1-9](?:[ \-/]?\d){{6,8}}|\(0[1-9]\d{{0,2}}\) ?\d(?:[ \-]?\d){{4,7}})(?!\d)"
    # International: +46 or 0046, an optional "(0)", then the number without its trunk 0.
    r"|(?<!\d)(?:\+|00)46[ \-]?(?:\(0\)[ \-]?)?[1-9](?:[ \-/]?\d){6,8}(?!\d)"
)
_EMAIL_LOCAL = r"[\w!#$%&'*+/=?^`{|}~.\-]"
# The look-behind starts a match only where a run of address characters begins: without it every position of
# a long run would be tried, which is quadratic in the length of the run.
_EMAIL = re.compile(rf"(?<!{_EMAIL_LOCAL}){_EMAIL_LOCAL}+@(?:[\w\-]+\.)+[\w\-]{{2,}}")


@dataclass(frozen=True)
class Finding:
    """Personal data at characters ``[start, end)`` of the original text, of a type (``PERSONNUMMER``...)."""

    start: int
    end: int
    type: str

    @property
    def placeholder(self) -> str:
        return f"[{self.type}]"


@dataclass(frozen=True)
class Redaction:
    """A redacted text and what was replaced (positions in the original text, in order)."""

    text: str
    findings: tuple[Finding, ...]


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (weights 2, 1, 2, 1, ... from the left for 10 digits)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _is_personnummer(date: str, serial: str) -> bool:
    month, day = int(date[2:4]), int(date[4:6])
    if day > 60:  # a samordningsnummer adds 60 to the day of birth
        day -= 60
    return 1 <= month <= 12 and 1 <= day <= 31 and luhn_valid(date + serial)


def _detections(text: str) -> Iterable[Finding]:
    for match in _EMAIL.finditer(text):
        yield Finding(match.start(), match.end(), E_POST)
    for match in _PERSONNUMMER.finditer(text):
        if _is_personnummer(match["date"], match["serial"]):
            yield Finding(match.start(), match.end(), PERSONNUMMER)
    for match in _PHONE.finditer(text):
        yield Finding(match.start(), match.end(), TELEFON)


def find_personal_data(text: str) -> list[Finding]:
    """Personal data in ``text``, in order, without overlaps (overlapping detections are merged).

    A merged region keeps the type of the detection that starts first (the longest, if several start there;
    an e-mail address before a personnummer before a phone number if they have the same extent).
    """
    priority = {E_POST: 0, PERSONNUMMER: 1, TELEFON: 2}
    merged: list[Finding] = []
    for finding in sorted(_detections(text), key=lambda f: (f.start, -f.end, priority[f.type])):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.start, max(last.end, finding.end), last.type)
        else:
            merged.append(finding)
    return merged


def redact_personal_data(text: str) -> Redaction:
    """``text`` with every personnummer, phone number and e-mail address replaced by its placeholder."""
    findings = find_personal_data(text)
    parts: list[str] = []
    position = 0
    for finding in findings:
        parts += [text[position : finding.start], finding.placeholder]
        position = finding.end
    parts.append(text[position:])
    return Redaction("".join(parts), tuple(findings))


def map_offset(findings: Sequence[Finding], offset: int, *, is_end: bool) -> int:
    """Where an offset of the original text lies in the redacted text.

    An offset inside a replaced region moves to the start of its placeholder (a span start) or to its end (a span
    end), so a span that touches personal data grows to cover the whole placeholder.
    """
    shift = 0
    for finding in findings:
        if offset <= finding.start:
            break
        if offset < finding.end:
            start = finding.start + shift
            return start + len(finding.placeholder) if is_end else start
        shift += len(finding.placeholder) - (finding.end - finding.start)
    return offset + shift


def map_span(findings: Sequence[Finding], start: int, end: int) -> tuple[int, int]:
    """A span ``[start, end)`` of the original text as a span of the redacted text (see :func:`map_offset`)."""
    return map_offset(findings, start, is_end=False), map_offset(findings, end, is_end=True)
