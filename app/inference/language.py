"""A small built-in language guess: Swedish ("sv"), English ("en") or anything else ("other").

The model is trained on Swedish (and some English) reports; a text in another language gets a routing that
nobody should trust without a look, so the service flags it for review. Telling sv from en from the rest needs
no model: function words and a few letters decide, and German and Finnish (the likeliest other languages in a
Swedish municipality next to Arabic and other non-Latin scripts) get word lists of their own so that their
shared letters (ä, ö) do not pass for Swedish.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["sv", "en", "other"]

# Enough of a long report to decide; keeps the cost bounded for 10,000-character texts.
_SAMPLE_CHARS = 2_000
_WORD = re.compile(r"[^\W\d_]+")
# A text whose letters are mostly outside the Latin script is neither Swedish nor English.
_MIN_LATIN_SHARE = 0.5

_SWEDISH = frozenset(
    """
    och att det som är en ett på av för med till den har inte om jag vi ni de var kan vid från så men eller
    sig hos mot efter under när här där nu igen mycket många inga ingen alla blir blev varit finns behöver
    skulle måste vill kommer också bara redan sedan hela denna detta dessa vår våra vårt min mitt mina vår
    hej tack mvh vänliga hälsningar snälla gärna fortfarande ligger står gick går gör görs ska borde sina
    utanför framför bakom mellan längs nära över vägen gatan parken skolan trasig trasiga sönder hål
    gatlampa lampan lampor soptunna soptunnan tömd tömts snö vatten läcker avlopp buller lukt råttor
    cykelbana övergångsställe parkering bil bilar barn barnen äldre hemtjänst bygglov förskola kommunen
    """.split()
)
_ENGLISH = frozenset(
    """
    the and is are was were be been being of to in on at a an it its this that these those there here for
    with not no has have had do does did our my we you your they them their he she his her from by near
    please thanks thank hello hi since still again very many all would should could will can must been
    street road park school broken lamp light bin water leak noise smell parking car children elderly
    outside behind between along over under about which who what when where why how week weeks days
    """.split()
)
_GERMAN = frozenset(
    """
    der die das und ist sind nicht ein eine einen dem den des mit von zu im auf für ich wir sie es bitte
    seit schon noch sehr vor bei aus nach auch wurde wird kaputt straße strasse danke gibt kein keine
    """.split()
)
_FINNISH = frozenset(
    """
    ja on ei se että kun mutta tai myös ole ovat oli olen olemme tämä tuo ne hän me te he kiitos hei
    edessä vieressä kadulla katu katulamppu rikki viikkoa päivää jo vielä paljon mitään koska siellä täällä
    """.split()
)
_MARKERS: dict[str, tuple[str, ...]] = {
    # å is Swedish (and Norwegian/Danish, close enough to route); ß and ü are German; Finnish doubles vowels.
    "sv": ("å",),
    "de": ("ß", "ü"),
    "fi": ("ää", "yy", "uu", "ii", "aa", "öö"),
}
_WORD_LISTS = {"sv": _SWEDISH, "en": _ENGLISH, "de": _GERMAN, "fi": _FINNISH}


def _is_latin_letter(char: str) -> bool:
    return char.isascii() or "\u00c0" <= char <= "\u024f"


def detect_language(text: str) -> Language:
    """The language of a report text: "sv", "en" or "other" (also when nothing tells)."""
    sample = text[:_SAMPLE_CHARS].lower()
    letters = [char for char in sample if char.isalpha()]
    if not letters or sum(map(_is_latin_letter, letters)) / len(letters) < _MIN_LATIN_SHARE:
        return "other"
    words = _WORD.findall(sample)
    scores = {
        language: sum(word in vocabulary for word in words)
        + sum(sample.count(marker) for marker in _MARKERS.get(language, ()))
        for language, vocabulary in _WORD_LISTS.items()
    }
    best = max(scores, key=lambda language: scores[language])
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return "other"
    return "sv" if best == "sv" else "en" if best == "en" else "other"
