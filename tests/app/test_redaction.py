"""Redaction of Swedish personal data: property-based (hypothesis) and a few worked examples."""

from __future__ import annotations

import time
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.audit.redaction import NAMN, Finding, find_personal_data, map_span, name_lists, redact_personal_data

WORDS = [
    "Hej", "gatlampan", "på", "vid", "är", "trasig", "sedan", "i", "går", "ring", "mig", "eller", "mejla", "tack",
    "kvällen", "lampan", "soptunnan", "har", "inte", "tömts", "mitt", "personnummer", "nummer", "ärende", "om",
    "brunnen",
]  # fmt: skip
STREETS = ["Storgatan", "Kungsvägen", "Östra Långgatan", "Ängsvägen", "Björkallén", "Västra Torggatan"]
CITIES = ["Växjö", "Örebro", "Luleå", "Malmö", "Umeå"]
MONTHS = ["januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober"]
AREA_CODES = ["08", "031", "040", "018", "019", "013", "0480", "0910", "0920", "0498"]
MOBILE_PREFIXES = ["070", "072", "073", "076", "079"]

words = st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join)


def luhn_check_digit(nine_digits: str) -> int:
    """The check digit of a personnummer, computed independently of the code under test."""
    total = 0
    for index, char in enumerate(nine_digits):
        product = int(char) * (2 if index % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


@st.composite
def personnummer(draw: st.DrawFn) -> str:
    born = draw(st.dates(min_value=date(1890, 1, 1), max_value=date(2025, 12, 31)))
    day = born.day + (60 if draw(st.booleans()) else 0)  # samordningsnummer
    birth_number = draw(st.integers(min_value=0, max_value=999))
    nine = f"{born:%y%m}{day:02d}{birth_number:03d}"
    last_four = f"{birth_number:03d}{luhn_check_digit(nine)}"
    short = f"{born:%y%m}{day:02d}"
    long = f"{born:%Y%m}{day:02d}"
    return draw(
        st.sampled_from(
            [
                f"{short}-{last_four}",
                f"{short}+{last_four}",
                f"{short}{last_four}",
                f"{long}-{last_four}",
                f"{long}{last_four}",
                f"{short} {last_four}",
                f"{long} {last_four}",
                f"{short}\u2013{last_four}",
                f"{long}\u2013{last_four}",
                f"{short} - {last_four}",
                f"{long} \u2013 {last_four}",
                f"{short}\u00a0{last_four}",
                f"{short}\u2014{last_four}",
            ]  # fmt: skip
        )
    )


def group_digits(digits: str, draw: st.DrawFn) -> str:
    """Digits as Swedes write them: in groups of two or three, or not grouped at all."""
    style = draw(st.sampled_from(["none", "twos", "threes"]))
    if style == "none":
        return digits
    groups = []
    rest = digits
    # "123 45 67": a group of three first when the length is odd, then pairs.
    if style == "threes" or len(rest) % 2:
        groups.append(rest[:3])
        rest = rest[3:]
    groups += [rest[i : i + 2] for i in range(0, len(rest), 2)]
    return " ".join(group for group in groups if group)


@st.composite
def phone_number(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        area = draw(st.sampled_from(MOBILE_PREFIXES))
        length = 7
    else:
        area = draw(st.sampled_from(AREA_CODES))
        length = draw(st.integers(min_value=max(5, 8 - len(area)), max_value=min(8, 10 - len(area))))
    first = draw(st.sampled_from("123456789"))
    rest = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    subscriber = group_digits(first + rest, draw)
    national = area[1:]
    return draw(
        st.sampled_from(
            [
                f"{area}-{subscriber}",
                f"{area} {subscriber}",
                f"{area}{subscriber.replace(' ', '')}",
                f"({area}) {subscriber}",
                f"+46 {national} {subscriber}",
                f"+46{national}{subscriber.replace(' ', '')}",
                f"+46 (0){national}-{subscriber}",
                f"0046 {national} {subscriber}",
                f"0046{national}{subscriber.replace(' ', '')}",
                f"0046-{national}-{subscriber}",
                f"+46-{national}-{subscriber}",
                f"{area}.{subscriber.replace(' ', '.')}",
                f"{area} - {subscriber}",
                f"{area} \u2013 {subscriber}",
                f"{area} - {subscriber.replace(' ', ' - ')}",
                f"{area}/{subscriber}",
            ]
        )
    )


@st.composite
def mobile_without_plus(draw: st.DrawFn) -> str:
    """46 7X XXX XX XX: a mobile number written with the country code but without its plus."""
    digits = draw(st.sampled_from("02369")) + draw(st.text(alphabet="0123456789", min_size=7, max_size=7))
    return draw(st.sampled_from(["46", "46 "])) + "7" + group_digits(digits, draw)


swedish_email = st.builds(
    "{}.{}@{}.{}".format,
    st.sampled_from(["anna", "örjan", "kalle", "li"]),
    st.sampled_from(["berg", "åström", "nilsson99"]),
    st.sampled_from(["gmail", "kommun", "telia-mail"]),
    st.sampled_from(["se", "com", "nu"]),
)
email = st.one_of(st.emails(), swedish_email)


def _mixed_case(word: str, draw: st.DrawFn) -> str:
    return "".join(char.upper() if draw(st.booleans()) else char for char in word)


@st.composite
def obfuscated_email(draw: st.DrawFn) -> str:
    """An address with the @ and (some of) the dots written out: (at), [at], " at ", snabel-a, (dot), " punkt "."""
    at = draw(st.sampled_from(["(at)", "[at]", " at ", " (at) ", " [ at ] ", " snabel-a ", "{at}", "<at>"]))
    dot = draw(st.sampled_from([".", " dot ", "(dot)", " [dot] ", " punkt ", "."]))
    at = _mixed_case(at, draw)
    dot = _mixed_case(dot, draw)
    local = draw(st.sampled_from(["anna", "örjan", "kalle", "li"]))
    if draw(st.booleans()):
        local += dot + draw(st.sampled_from(["berg", "åström", "nilsson99"]))
    domain = draw(st.sampled_from(["gmail", "kommun", "telia-mail", "hotmail"]))
    tld = _mixed_case(draw(st.sampled_from(["se", "com", "nu"])), draw)
    return f"{_mixed_case(local, draw)}{at}{domain}{dot}{tld}"


@st.composite
def in_text(draw: st.DrawFn, secret: st.SearchStrategy[str]) -> tuple[str, str]:
    value = draw(secret)
    before = draw(st.sampled_from([" ", " (", ": ", "\n", ", "]))
    after = draw(st.sampled_from([" ", ", ", ". ", ")", "?\n", ""]))
    return value, f"{draw(words)}{before}{value}{after}{draw(words)}"


@st.composite
def dates_written(draw: st.DrawFn) -> str:
    day = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)))
    return draw(
        st.sampled_from(
            [
                f"{day:%Y-%m-%d}",
                f"{day:%Y%m%d}",
                f"{day:%d.%m.%Y}",
                f"{day:%d-%m-%Y}",
                f"{day:%d/%m/%Y}",
                f"{day.day}/{day.month} {day.year}",
                f"{day.day} {MONTHS[day.month % len(MONTHS)]} {day.year}",
                f"{day:%Y-%m-%d} kl. {day.day % 24:02d}:30",
                f"{day:%Y-%m-%d}T08:30:00",
            ]
        )
    )


@st.composite
def street_address(draw: st.DrawFn) -> str:
    address = f"{draw(st.sampled_from(STREETS))} {draw(st.integers(1, 300))}{draw(st.sampled_from(['', 'A', 'B']))}"
    if draw(st.booleans()):
        address += f", lgh {draw(st.integers(1001, 1999))}"
    if draw(st.booleans()):
        address += f", {draw(st.integers(100, 999))} {draw(st.integers(10, 99))} {draw(st.sampled_from(CITIES))}"
    return address


@st.composite
def case_number(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["KS", "BN", "MN", "SN", "KFN", "Dnr", "Dnr KS", "Ärende"]))
    year = draw(st.integers(1990, 2030))
    separator = draw(st.sampled_from(["/", "-", ".", ":"]))
    number = draw(st.integers(1, 99999))
    width = draw(st.integers(1, 6))
    return f"{prefix} {year}{separator}{number:0{width}d}"


@given(in_text(personnummer()))
def test_no_valid_personnummer_survives(case: tuple[str, str]) -> None:
    _, text = case
    redacted = redact_personal_data(text).text
    assert "[PERSONNUMMER]" in redacted
    # The surrounding words hold no digits: any digit left would be part of the personnummer.
    assert not any(char.isdigit() for char in redacted), redacted


@given(in_text(phone_number()))
def test_no_phone_number_survives(case: tuple[str, str]) -> None:
    _, text = case
    redacted = redact_personal_data(text).text
    assert "[TELEFON]" in redacted
    assert not any(char.isdigit() for char in redacted), redacted


@given(in_text(email))
def test_no_email_address_survives(case: tuple[str, str]) -> None:
    address, text = case
    redacted = redact_personal_data(text).text
    assert "[E-POST]" in redacted
    assert "@" not in redacted
    assert address not in redacted


@st.composite
def amount(draw: st.DrawFn) -> str:
    value = draw(st.integers(1, 9_999_999))
    grouped = f"{value:,}".replace(",", draw(st.sampled_from([" ", "\u00a0", "", "."])))
    return grouped + draw(st.sampled_from([" kr", " kronor", ":-", " SEK", "", ",50 kr", " %"]))


@st.composite
def year_or_hours(draw: st.DrawFn) -> str:
    year = draw(st.integers(1900, 2099))
    hour = draw(st.integers(0, 23))
    later = draw(st.integers(hour, 23))
    return draw(
        st.sampled_from(
            [
                f"år {year}",
                f"{year}-{year + 1}",
                f"sedan {year}",
                f"kl. {hour:02d}.{draw(st.sampled_from(['00', '15', '30', '45']))}",
                f"{hour:02d}.00-{later:02d}.30",
                f"{hour:02d}:00 - {later:02d}:00",
                f"vecka {draw(st.integers(1, 52))}",
            ]
        )
    )


@given(in_text(st.one_of(personnummer(), phone_number(), mobile_without_plus())))
def test_no_number_survives_whatever_its_separators(case: tuple[str, str]) -> None:
    _, text = case
    redacted = redact_personal_data(text).text
    assert not any(char.isdigit() for char in redacted), redacted


@given(in_text(obfuscated_email()))
def test_no_obfuscated_email_address_survives(case: tuple[str, str]) -> None:
    address, text = case
    redacted = redact_personal_data(text).text
    assert "[E-POST]" in redacted
    domain = address.lower().split("gmail" if "gmail" in address.lower() else "kommun")[0]
    assert address not in redacted
    # Nothing of the local part or the domain is left.
    for part in ("gmail", "kommun", "telia-mail", "hotmail", "åström", "nilsson99"):
        assert part not in redacted.lower() or part in text.lower().replace(address.lower(), ""), (domain, redacted)


@given(in_text(st.one_of(dates_written(), street_address(), case_number(), amount(), year_or_hours())))
def test_dates_street_numbers_and_case_numbers_are_left_alone(case: tuple[str, str]) -> None:
    _, text = case
    assert find_personal_data(text) == []
    assert redact_personal_data(text).text == text


# --- names -------------------------------------------------------------------------------------------------

LISTS = name_lists()
FIRST_NAMES = sorted(LISTS.first - LISTS.ambiguous)
SURNAMES = sorted(LISTS.last)
SENTENCES = [
    "Gatlampan på Storgatan 12 är trasig sedan 2024-03-15.",
    "Soptunnan vid Björkvägen 3 har inte tömts, ärende KS 2024/0123.",
    "Det är ett stort hål i asfalten på Kungsgatan vid busshållplatsen.",
    "Fakturan på 1 250 kr stämmer inte.",
]


@st.composite
def name_in_context(draw: st.DrawFn) -> tuple[str, str]:
    """A name where residents write names: a signature, a greeting, a self-introduction, a last line."""
    first = draw(st.sampled_from(FIRST_NAMES))
    full = f"{first} {draw(st.sampled_from(SURNAMES))}"
    text = draw(st.sampled_from(SENTENCES))
    template, name = draw(
        st.sampled_from(
            [
                ("{text}\nMvh {name}", full),
                ("{text}\nMVH {name}", first),
                ("{text} Hälsningar, {name}", first),
                ("{text}\n\nMed vänliga hälsningar\n{name}", full),
                ("{text}\nVänlig hälsning,\n{name}", full),
                ("Hej! Jag heter {name} och bor här. {text}", full),
                ("Jag heter {name}. {text}", first),
                ("{text}\n{name}", full),
                ("{text}\n{name}", first),
                ("{text} /{name}", first),
                ("Hej {name}, {text}", first),
                ("{text} Min granne {name} håller med.", full),
                ("{text} Kind regards, {name}", full),
            ]
        )
    )
    return name, template.format(text=text, name=name)


@given(name_in_context())
def test_names_in_signatures_greetings_and_introductions_are_redacted(case: tuple[str, str]) -> None:
    name, text = case
    redaction = redact_personal_data(text)
    assert "[NAMN]" in redaction.text
    start = text.index(name)
    assert any(f.type == NAMN and f.start <= start and start + len(name) <= f.end for f in redaction.findings)
    # The rest of the report is untouched: places, dates, case numbers and amounts survive.
    for sentence in SENTENCES:
        if sentence in text:
            assert sentence in redaction.text


@pytest.mark.parametrize(
    "text",
    [
        "Det är mörkt vid Gustav Adolfs torg och på Karl Johans gata.",
        "Anna Lindhs plats är skräpig, och Per Albin Hanssons väg också.",
        "Stig vid skolan är lerig. Per dag kommer 100 bilar. En stor björk har fallit.",
        "Bänken vid Hagen är trasig och båten vid Kaj 5 läcker.",
        "Lärkgatan/Mossvägen har ett hål.",
        "Hej! Ville bara säga tack.",
        "Återvinningsstationen vid Ica Kvantum är full.",
        "Öppet 08.00-16.30 och 08-17, 09-16; den 15.03.2024, 1 500 000 kr, år 2019.",
    ],
)
def test_places_and_ordinary_words_are_not_names(text: str) -> None:
    assert find_personal_data(text) == []


def test_the_shipped_name_lists_are_the_ones_faker_gives() -> None:
    pytest.importorskip("faker")
    pytest.importorskip("saol")
    from training.person_names import NAMES_FILE, build_name_lists, name_lists_json

    assert NAMES_FILE.read_text(encoding="utf-8") == name_lists_json(build_name_lists())
    assert {"Anna", "Lennart", "Mohammed"} <= LISTS.first
    assert {"Stig", "Bo", "Björk"} <= LISTS.ambiguous
    assert {"Svensson", "Andersson"} <= LISTS.last


@given(st.lists(st.one_of(words, personnummer(), phone_number(), email, street_address()), min_size=1, max_size=8))
def test_spans_outside_personal_data_keep_their_text(parts: list[str]) -> None:
    text = " ".join(parts)
    redaction = redact_personal_data(text)
    for finding in redaction.findings:
        assert redaction.text.count(finding.placeholder) >= 1
    # Every word that redaction did not touch is found at its mapped offsets in the redacted text.
    position = 0
    for word in text.split(" "):
        start, end = position, position + len(word)
        position = end + 1
        if word and not any(f.start < end and start < f.end for f in redaction.findings):
            mapped_start, mapped_end = map_span(redaction.findings, start, end)
            assert redaction.text[mapped_start:mapped_end] == word


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mitt pnr är 19800101-1231.", "Mitt pnr är [PERSONNUMMER]."),
        ("samordningsnummer 800161-1238 tack", "samordningsnummer [PERSONNUMMER] tack"),
        # Luhn fails: a mistyped number that is neither personnummer nor phone number stays.
        ("ärende 19800101-1234", "ärende 19800101-1234"),
        # An organisation number (month 20 or more) passes Luhn but is not a person's.
        ("Kommunens orgnr 212000-0142", "Kommunens orgnr 212000-0142"),
        ("ring 08-123 456 78 eller +46 (0)70-123 45 67", "ring [TELEFON] eller [TELEFON]"),
        ("skriv till örjan.åström@kommun.se.", "skriv till [E-POST]."),
        # An address whose local part is a phone number is one e-mail address, not a phone number and a rest.
        ("sms 0701234567@sms.telia.se", "sms [E-POST]"),
        ("Storgatan 12B, 123 45 Växjö, den 2024-03-15, KS 2024/0123", None),
        ("pnr 800101 1231, 19800101\u20131231, 800101 - 1231", "pnr [PERSONNUMMER], [PERSONNUMMER], [PERSONNUMMER]"),
        ("070.123.45.67, 08 - 123 456 78, 0046701234567, 46701234567", "[TELEFON], [TELEFON], [TELEFON], [TELEFON]"),
        ("a.s(at)gmail.com, A [AT] TELIA [DOT] SE, li punkt s snabel-a telia punkt se", "[E-POST], [E-POST], [E-POST]"),
        ("Jag heter Anna Svensson, Storgatan 5.\nMvh Anna", "Jag heter [NAMN], Storgatan 5.\nMvh [NAMN]"),
        # first names and surnames that end like places ("-gata", "stig", "strand") are names after a cue
        ("Lampan är trasig.\nMvh Agata Aalto och Stig Strand", "Lampan är trasig.\nMvh [NAMN]"),
        ("Hej Kaj, lampan vid Kaj 5 är trasig.", "Hej [NAMN], lampan vid Kaj 5 är trasig."),
    ],
)  # fmt: skip
def test_worked_examples(text: str, expected: str | None) -> None:
    """``expected`` None: the text must come back unchanged."""
    assert redact_personal_data(text).text == (text if expected is None else expected)


def test_map_span_grows_a_span_that_touches_personal_data_to_the_whole_placeholder() -> None:
    text = "Anna 070-123 45 67 Storgatan"
    redaction = redact_personal_data(text)
    assert redaction.findings == (Finding(5, 18, "TELEFON"),)
    assert redaction.text == "Anna [TELEFON] Storgatan"
    assert map_span(redaction.findings, 0, 12) == (0, 14)  # "Anna 070-123" -> "Anna [TELEFON]"
    assert map_span(redaction.findings, 19, 28) == (15, 24)  # shifted by len("[TELEFON]") - 13
    assert map_span(redaction.findings, 0, 4) == (0, 4)


def test_redaction_is_linear_in_the_length_of_the_text() -> None:
    # A long run of address characters once made the e-mail pattern try every position (quadratic time).
    started = time.perf_counter()
    redact_personal_data("a" * 10_000 + " " + "0" * 10_000 + " " + "a.b-" * 2_500)
    assert time.perf_counter() - started < 0.5
