"""Build the person-name list that the audit log's redaction ships with (``app/audit/person_names.json``).

The names come from Faker's person providers (a maintained package: Swedish first, then the other Latin-script
locales whose names are common among Swedish residents and visitors). The service must not depend on Faker, so
the lists are extracted here, at build time, into one small JSON file inside ``app/``.

A first name that is also an ordinary Swedish word (``Stig``, ``Bo``, ``Dag``, ``Björk``: a SAOL lemma, or a very
frequent word form such as ``Hans``) or a Swedish town is marked ambiguous: redaction takes it for a name only with
a cue (a signature, a greeting, a surname after it), never alone.

Run: ``python -m training.person_names`` (rewrites the file; a test checks the shipped file is up to date).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NAMES_FILE = Path(__file__).resolve().parents[1] / "app" / "audit" / "person_names.json"

# Swedish first; then the languages of Sweden's largest groups of residents born abroad and its neighbours, in
# Latin script (reports are typed in Latin script; names in other scripts need no list to look foreign).
LOCALES = (
    "sv_SE", "fi_FI", "da_DK", "no_NO", "is_IS", "en_US", "en_GB", "en_IE", "de_DE", "nl_NL", "fr_FR", "es_ES",
    "it_IT", "pt_PT", "pl_PL", "cs_CZ", "sk_SK", "hu_HU", "ro_RO", "hr_HR", "sl_SI", "et_EE", "lt_LT", "lv_LV",
    "tr_TR",
)  # fmt: skip
FIRST_NAME_FIELDS = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary")
LAST_NAME_FIELDS = ("last_names", "last_names_male", "last_names_female")
# A very frequent Swedish word form (zipf 5: once in 100,000 words) is a word first, whatever it also names.
COMMON_WORD_ZIPF = 5.0
# Names that are also month or weekday names, or the name of Sweden's largest grocery chain.
NOT_ALONE = (
    "Januari Februari Mars April Maj Juni Juli Augusti September Oktober November December January February March "
    "May June July August October Måndag Tisdag Onsdag Torsdag Fredag Lördag Söndag Monday Tuesday Wednesday "
    "Thursday Friday Saturday Sunday Ica Eve Easter Christmas Midsummer"
).split()
_NAME = re.compile(r"[^\W\d_]{2,}(?:-[^\W\d_]{2,})?")


def _latin(name: str) -> bool:
    return all(not char.isalpha() or "LATIN" in unicodedata.name(char, "") for char in name)


def _names(provider: Any, fields: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for field in fields:
        values = getattr(provider, field, None) or ()
        names.update(str(value) for value in values)  # tuples, or dicts of name -> weight
    return {name for name in names if _NAME.fullmatch(name) and name[0].isupper() and _latin(name)}


def _is_common_word(name: str, lemmas: set[str], towns: set[str]) -> bool:
    from wordfreq import zipf_frequency

    lower = name.lower()
    return lower in lemmas or name in towns or zipf_frequency(lower, "sv") >= COMMON_WORD_ZIPF


def build_name_lists() -> dict[str, Any]:
    """First names, the ambiguous ones among them, and surnames, sorted; with their provenance."""
    import saol

    first: set[str] = set()
    last: set[str] = set()
    for locale in LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        first |= _names(provider, FIRST_NAME_FIELDS)
        last |= _names(provider, LAST_NAME_FIELDS)
    # Lower-case lemmas only: a capitalised SAOL entry is itself a name.
    lemmas = {entry.word for entry in saol.saol14 if entry.word.islower()}
    towns = set(importlib.import_module("faker.providers.address.sv_SE").Provider.cities)
    ambiguous = {name for name in first if _is_common_word(name, lemmas, towns) or name in NOT_ALONE}
    return {
        "source": (
            f"faker {version('faker')} person providers ({', '.join(LOCALES)}); ambiguous: a SAOL lemma "
            f"(saol {version('saol')}), a Swedish word form of zipf >= {COMMON_WORD_ZIPF} (wordfreq "
            f"{version('wordfreq')}), a Swedish town (faker sv_SE), a month, a weekday or a shop"
        ),
        "first_names": sorted(first),
        "ambiguous_first_names": sorted(ambiguous),
        "last_names": sorted(last),
    }


def name_lists_json(lists: dict[str, Any]) -> str:
    return json.dumps(lists, ensure_ascii=False, indent=0) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=NAMES_FILE, help="Where the JSON file goes.")
    args = parser.parse_args()
    lists = build_name_lists()
    args.out.write_text(name_lists_json(lists), encoding="utf-8")
    logger.info(
        "wrote %d first names (%d ambiguous) and %d surnames to %s",
        len(lists["first_names"]),
        len(lists["ambiguous_first_names"]),
        len(lists["last_names"]),
        args.out,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
