"""Redaction of Swedish personal data before a text is stored.

Recognised (and replaced by a typed placeholder):

- personnummer and samordningsnummer (``[PERSONNUMMER]``): 10 or 12 digits with a valid month, a day of 1-31
  (61-91 for a samordningsnummer) and a valid Luhn check digit, the last four digits joined to the date directly
  or by ``-``, ``+``, an en or em dash, a space, or a dash with spaces (``YYMMDD-NNNN``, ``YYYYMMDD–NNNN``,
  ``YYMMDD NNNN``, ``YYMMDD - NNNN``). The date and Luhn checks keep organisation numbers (month 20 or more),
  case numbers and other long numbers readable;
- Swedish phone numbers (``[TELEFON]``): a trunk ``0`` and 8-10 digits in all, or ``+46``/``0046`` and 7-9 digits
  (an optional ``(0)``), or a mobile number written ``467...`` without its plus; the digits in groups separated by
  spaces, hyphens, dashes (with or without spaces), dots or a slash, or in one block. Dates (``15.03.2024``) and
  opening hours (``08.00-16.30``) are not numbers;
- e-mail addresses (``[E-POST]``), also obfuscated: ``(at)``, ``[at]``, `` at ``, ``snabel-a`` for the ``@`` and
  ``(dot)``, `` dot ``, `` punkt `` for a dot, in any case;
- person names (``[NAMN]``), from the name lists of ``person_names.json`` (built from Faker by
  ``training/person_names.py``) and the context they stand in: the capitalised words after a signature or a
  self-introduction (``Mvh``, ``Hälsningar,``, ``Jag heter``, ``/``), a known first name after a greeting (``Hej
  Anna``), a known first name followed by a surname (``Anna Svensson``), a known first name inside a sentence
  (unless it is also an ordinary word: ``Stig``, ``Björk``), and a name alone on the last line. Capitalised words
  that end like a place (``-gatan``, ``-vägen``, ``-skolan``...) or stand before a place word (``Karl Johans gata``)
  are never taken for names: places are what routing needs.

Where detections overlap, the union is replaced, so no part of a detection survives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PERSONNUMMER = "PERSONNUMMER"
TELEFON = "TELEFON"
E_POST = "E-POST"
NAMN = "NAMN"

NAMES_FILE = Path(__file__).with_name("person_names.json")

# Spaces inside a line (never a line break: a number does not continue on the next line).
_SPACE = "[ \t\u00a0\u202f]"
_DASH = "[-\u2010\u2011\u2012\u2013\u2014\u2212]"

_PERSONNUMMER = re.compile(
    rf"(?<!\d)(?:18|19|20)?(?P<date>\d{{6}})(?:{_SPACE}?(?:{_DASH}|\+){_SPACE}?|{_SPACE})?(?P<serial>\d{{4}})(?!\d)"
)

# One separator between the digit groups of a phone number.
_GAP = rf"(?:{_SPACE}?(?:{_DASH}|[./]){_SPACE}?|{_SPACE})"
_PHONE = re.compile(
    rf"(?<![\d/\-,])(?<![\d.]\.)(?:"
    # International: +46 or 0046, an optional "(0)", then the number without its trunk 0.
    rf"(?P<international>(?:\+|00){_SPACE}?46{_GAP}?(?:\(0\){_GAP}?)?[1-9](?:{_GAP}?\d){{6,8}})"
    # A mobile number with the country code but without the plus: 46 7X XXX XX XX.
    rf"|(?P<bare>46{_GAP}?7\d(?:{_GAP}?\d){{7}})"
    # National: trunk 0, the area code in brackets or not, 8-10 digits in all.
    rf"|(?P<national>0[1-9](?:{_GAP}?\d){{6,8}}|\(0[1-9]\d{{0,2}}\){_SPACE}?\d(?:{_GAP}?\d){{3,8}})"
    rf")(?!\d)"
)
_DATE_LIKE = re.compile(r"(?:0[1-9]|[12]\d|3[01])[-/.](?:0[1-9]|1[0-2])[-/.](?:19|20)\d\d")
_HOURS_LIKE = re.compile(rf"\d\d[.:]\d\d{_SPACE}?{_DASH}{_SPACE}?\d\d[.:]\d\d|\d\d{_DASH}\d\d,?{_SPACE}\d\d{_DASH}\d\d")

_EMAIL_LOCAL = r"[\w!#$%&'*+/=?^`{|}~.\-]"
_OPEN, _CLOSE = r"[(\[{<]", r"[)\]}>]"
_AT = (
    rf"(?:{_SPACE}?@{_SPACE}?|{_SPACE}?{_OPEN}{_SPACE}?(?i:at|snabel-?a){_SPACE}?{_CLOSE}{_SPACE}?"
    rf"|{_SPACE}(?i:at|snabel-?a){_SPACE})"
)
_SPELLED_DOT = rf"(?:{_SPACE}?{_OPEN}{_SPACE}?(?i:dot|punkt){_SPACE}?{_CLOSE}{_SPACE}?|{_SPACE}(?i:dot|punkt){_SPACE})"
_DOT = rf"(?:\.|{_SPELLED_DOT})"
# The look-behind starts a match only where a run of address characters begins, and the spelled-out repetitions
# are bounded: without both, every position of a long run would be tried against the whole run (quadratic time).
# The top-level domain holds a letter ("at 08.30" is no address).
_EMAIL = re.compile(
    rf"(?<!{_EMAIL_LOCAL}){_EMAIL_LOCAL}+(?:{_SPELLED_DOT}{_EMAIL_LOCAL}+){{0,4}}"
    rf"{_AT}(?:[\w\-]+{_DOT}){{1,40}}[\w\-]*[^\W\d_][\w\-]*"
)

# --- names ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:[-'\u2019][^\W\d_]+)*")
# After these, the capitalised words that follow are the writer's (or someone's) name, listed or not.
_SIGNATURE_CUE = re.compile(
    r"(?i:\b(?:m\.?v\.?h|med\s+vänlig(?:a)?\s+hälsning(?:ar)?|vänlig(?:a)?\s+hälsning(?:ar)?|bästa\s+hälsningar"
    r"|varma\s+hälsningar|hälsningar|hälsning|hälsn|hilsen|terveisin|(?:kind\s+|best\s+|warm\s+)?regards"
    r"|best\s+wishes|(?:yours\s+)?sincerely|jag\s+heter|mitt\s+namn\s+är|namnet\s+är|my\s+name\s+is"
    r"|undertecknad)\b)"
    r"|(?:^|(?<=\s))/{1,2}(?=\s?[^\W\d_])",
    re.MULTILINE,
)
# After these, a word is a name only if it is a known first name (an ambiguous one too after a greeting).
_GREETING_CUE = re.compile(r"(?i:\b(?:hej|hejsan|hallå|tjena|hi|hello|dear|kära|tack|thanks)\b)")
_MENTION_CUE = re.compile(r"(?i:\b(?:till|från|ring|sms:?a|mejla|kontakta|kontaktperson|handläggare|handläggaren)\b)")
# Capitalised words that begin no name, whatever cue stands before them.
_NOT_NAMES = frozenset(
    "En Ett Den Det De Jag Vi Ni Han Hon Min Mitt Mina Vår Vårt Våra Er Ert Era Från Till Och Med Alla Boende "
    "The A An My Our Your We I".split()
)
_CUE_GAP = re.compile(rf"{_SPACE}*[,:!.]?{_SPACE}*(?:\r?\n{_SPACE}*)?")
_GREETING_GAP = re.compile(rf"{_SPACE}*,?{_SPACE}*")
_NAME_GAP = re.compile(rf"{_SPACE}+|{_SPACE}*-{_SPACE}*")
_AND = re.compile(rf"{_SPACE}+(?:och|&|and|samt){_SPACE}+")
# Words that end like a place, and words for places that may follow a name in a place name ("Karl Johans gata").
_PLACE_SUFFIX = re.compile(
    r"(?i:.*(?:gatan|gata|gatans|gränd|gränden|vägen|väg|vägens|leden|stigen|stig|allén|allé|torget|torg|torgets"
    r"|platsen|plan|parken|park|backen|backe|skolan|skola|hallen|badet|kyrkan|gården|området|staden|byn|sjön"
    r"|ån|viken|hamnen|bron|kommun|kommunen|huset|centrum|stationen|kyrka|slott|slottet|vallen|lunden|hagen"
    r"|berget|udden|holmen|strand|stranden|ängen|dalen|höjden|tunneln|rondellen|korsningen|terrassen|kajen))"
)
_PLACE_WORDS = frozenset(
    "gata gatan väg vägen gränd torg torget plats platsen park parken allé allén skola skolan förskola "
    "förskolan gymnasium gymnasiet hall hallen bad badet kyrka kyrkan backe backen stig stigen plan väg kaj "
    "kajen bro bron center centrum gård gården street road square park school avenue lane".split()
)
_MAX_NAME_WORDS = 4


@dataclass(frozen=True)
class NameLists:
    """Known first names (``ambiguous``: the ones that are also ordinary words or towns) and surnames."""

    first: frozenset[str]
    ambiguous: frozenset[str]
    last: frozenset[str]


@lru_cache(maxsize=1)
def name_lists() -> NameLists:
    """The shipped name lists (loaded once)."""
    data = json.loads(NAMES_FILE.read_text(encoding="utf-8"))
    return NameLists(
        first=frozenset(data["first_names"]),
        ambiguous=frozenset(data["ambiguous_first_names"]),
        last=frozenset(data["last_names"]),
    )


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


def _is_phone_number(match: re.Match[str]) -> bool:
    number = match.group()
    if _DATE_LIKE.match(number) or _HOURS_LIKE.fullmatch(number):
        return False
    digits = sum(char.isdigit() for char in number)
    if match["national"] is not None:
        return 8 <= digits <= 10
    return True  # the international patterns count their digits themselves


# --- names ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    text: str

    @property
    def capitalised(self) -> bool:
        return self.text[0].isupper() and len(self.text) > 1


def _is_place_word(word: str) -> bool:
    return _PLACE_SUFFIX.fullmatch(word) is not None or word.lower() in _PLACE_WORDS


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\u00a0\"'(«»“”")
    return not before or before[-1] in ".!?:\n"


class _NameFinder:
    """Person names in one text (see the module docstring for the rules)."""

    def __init__(self, text: str, names: NameLists) -> None:
        self.text = text
        self.names = names
        self.words = [_Word(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
        self._index = {word.start: i for i, word in enumerate(self.words)}

    def _word_at(self, position: int, gap: re.Pattern[str] = _CUE_GAP) -> int | None:
        """The index of the word that starts at ``position`` (after the cue's gap), or None."""
        matched = gap.match(self.text, position)
        return self._index.get(matched.end() if matched else position)

    def _follows_closely(self, index: int) -> bool:
        """Whether word ``index`` continues the name of word ``index - 1`` (only spaces or a hyphen between)."""
        previous, word = self.words[index - 1], self.words[index]
        return _NAME_GAP.fullmatch(self.text, previous.end, word.start) is not None

    def _before_place_word(self, index: int) -> bool:
        """Whether the word after ``index`` names a place kind (``Gustav Adolfs torg``)."""
        following = index + 1
        return (
            following < len(self.words)
            and _NAME_GAP.fullmatch(self.text, self.words[index].end, self.words[following].start) is not None
            and self.words[following].text.lower() in _PLACE_WORDS
        )

    def _name_run(self, index: int, *, known_first: bool, ambiguous: bool = True) -> tuple[int, int] | None:
        """The characters of the capitalised words from word ``index`` on (one name, or two joined by "och")."""
        if index >= len(self.words):
            return None
        first = self.words[index]
        # a known first name that looks like a place ("Stig", "Kaj", "Agata") is a name where a cue or the name
        # lists put it; callers without such context check _is_place_word themselves
        if not first.capitalised or first.text in _NOT_NAMES:
            return None
        if _is_place_word(first.text) and first.text not in self.names.first:
            return None
        if known_first and first.text not in self.names.first:
            return None
        if not ambiguous and first.text in self.names.ambiguous:
            return None
        last = index
        while (
            last + 1 < len(self.words)
            and last + 1 - index < _MAX_NAME_WORDS
            and self._follows_closely(last + 1)
            and self.words[last + 1].capitalised
            and (not _is_place_word(self.words[last + 1].text) or self.words[last + 1].text in self.names.last)
        ):
            last += 1
        if self._before_place_word(last):
            return None
        end = self.words[last].end
        # "Anna och Per Svensson": the second name of a signature.
        joined = _AND.match(self.text, end)
        after = self._index.get(joined.end()) if joined is not None else None
        if after is not None:
            second = self._name_run(after, known_first=True)
            if second is not None:
                end = second[1]
        return first.start, end

    def _after_cues(self) -> Iterator[tuple[int, int]]:
        for cue in _SIGNATURE_CUE.finditer(self.text):
            index = self._word_at(cue.end())
            if index is not None:
                span = self._name_run(index, known_first=False)
                if span is not None:
                    yield span
        for cues, ambiguous in ((_GREETING_CUE, True), (_MENTION_CUE, False)):
            for cue in cues.finditer(self.text):
                index = self._word_at(cue.end(), _GREETING_GAP)
                if index is not None:
                    span = self._name_run(index, known_first=True, ambiguous=ambiguous)
                    if span is not None:
                        yield span

    def _known_names(self) -> Iterator[tuple[int, int]]:
        names = self.names
        for index, word in enumerate(self.words):
            if word.text not in names.first or not word.capitalised:
                continue
            inside_sentence = not _starts_sentence(self.text, word.start)
            unambiguous = word.text not in names.ambiguous
            following = self.words[index + 1] if index + 1 < len(self.words) else None
            has_surname = (
                following is not None
                and self._follows_closely(index + 1)
                and following.text in names.last
                and not _is_place_word(following.text)
            )
            alone_inside_sentence = unambiguous and inside_sentence and not _is_place_word(word.text)
            if has_surname or alone_inside_sentence:
                span = self._name_run(index, known_first=True)
                if span is not None:
                    yield span

    def _last_line(self) -> Iterator[tuple[int, int]]:
        stripped = self.text.rstrip()
        line_start = stripped.rfind("\n") + 1
        line = stripped[line_start:]
        words = [w for w in self.words if line_start <= w.start < len(stripped)]
        if not words or len(words) > _MAX_NAME_WORDS or any(char.isdigit() for char in line):
            return
        if words[0].text not in self.names.first or words[0].text in self.names.ambiguous and len(words) == 1:
            return
        if all(word.capitalised for word in words) and not line[words[-1].end - line_start :].strip(" .!"):
            span = self._name_run(self._index[words[0].start], known_first=True)
            if span is not None:
                yield span

    def findings(self) -> Iterator[Finding]:
        for start, end in (*self._after_cues(), *self._known_names(), *self._last_line()):
            yield Finding(start, end, NAMN)


# --- all together ---------------------------------------------------------------------------------------------


def _detections(text: str, *, names: bool) -> Iterable[Finding]:
    for match in _EMAIL.finditer(text):
        yield Finding(match.start(), match.end(), E_POST)
    for match in _PERSONNUMMER.finditer(text):
        if _is_personnummer(match["date"], match["serial"]):
            yield Finding(match.start(), match.end(), PERSONNUMMER)
    for match in _PHONE.finditer(text):
        if _is_phone_number(match):
            yield Finding(match.start(), match.end(), TELEFON)
    if names:
        yield from _NameFinder(text, name_lists()).findings()


_PRIORITY = {E_POST: 0, PERSONNUMMER: 1, TELEFON: 2, NAMN: 3}


def find_personal_data(text: str, *, names: bool = True) -> list[Finding]:
    """Personal data in ``text``, in order, without overlaps (overlapping detections are merged).

    A merged region keeps the type of the detection that starts first (the longest, if several start there;
    an e-mail address before a personnummer before a phone number before a name if they have the same extent).
    ``names=False`` looks for numbers and addresses only.
    """
    merged: list[Finding] = []
    for finding in sorted(_detections(text, names=names), key=lambda f: (f.start, -f.end, _PRIORITY[f.type])):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.start, max(last.end, finding.end), last.type)
        else:
            merged.append(finding)
    return merged


def redact_personal_data(text: str, *, names: bool = True) -> Redaction:
    """``text`` with every personnummer, phone number, e-mail address and (``names``) person name replaced by its
    placeholder."""
    findings = find_personal_data(text, names=names)
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
