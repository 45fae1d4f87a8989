"""The built-in language guess tells Swedish, English and the rest apart."""

from __future__ import annotations

import pytest

from app.inference.language import detect_language


@pytest.mark.parametrize(
    "text",
    [
        "Gatlampan utanför Storgatan 12 har varit trasig i två veckor.",
        "Det ligger mycket skräp vid busshållplatsen och ingen har städat",  # no å/ä/ö
        "hej! soptunnan har inte tomts sen i fredags, kan ni komma och ta den",  # no å/ä/ö, lower case
        "Trasig gatlampa",
        "Stort hål i vägen vid skolan",
    ],
)
def test_swedish(text: str) -> None:
    assert detect_language(text) == "sv"


@pytest.mark.parametrize(
    "text",
    [
        "The street light outside our house has been broken for two weeks.",
        "Hello, there is a big pothole on the road near the school. Please fix it.",
    ],
)
def test_english(text: str) -> None:
    assert detect_language(text) == "en"


@pytest.mark.parametrize(
    "text",
    [
        "Die Straßenlaterne vor unserem Haus ist seit zwei Wochen kaputt.",  # German
        "Ich habe nicht gewusst, dass die Mülltonne nicht geleert wird.",  # German
        "Katulamppu on ollut rikki kaksi viikkoa ja se on vaarallista.",  # Finnish
        "Kadulla on iso kuoppa ja se pitää korjata pian.",  # Finnish
        "مصباح الشارع أمام منزلنا مكسور منذ أسبوعين",  # Arabic
        "12345 !!!",  # nothing to tell from
        "",
    ],
)
def test_other(text: str) -> None:
    assert detect_language(text) == "other"


def test_only_the_start_of_a_long_text_is_read() -> None:
    text = "Gatlampan på Storgatan är trasig och det är mörkt. " * 40 + "the and is of to " * 500
    assert detect_language(text) == "sv"
