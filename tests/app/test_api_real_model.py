"""The service with the shipped model (models/default): clear reports are routed where a person would route them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app

DEFAULT_MODEL = Path(__file__).parents[2] / "models" / "default"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.real_model,
    pytest.mark.skipif(
        not (DEFAULT_MODEL / "manifest.json").is_file(),
        reason="models/default is not built yet (the lead ships it with `kommunrouter export`)",
    ),
]


@pytest.fixture
async def real_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(make_settings(model_dir=DEFAULT_MODEL, intra_op_threads=2))) as client:
        yield client


@pytest.mark.parametrize(
    ("text", "department"),
    [
        ("Gatlampan utanför Storgatan 12 har varit trasig i två veckor, det är helt mörkt på kvällarna.", "gata_park"),
        ("Det läcker vatten från en brandpost på Ekvägen och trycket i kranen är nästan borta.", "vatten_avlopp"),
        ("Soptunnan på Björkvägen 3 har inte tömts på tre veckor trots att vi har betalat avgiften.", "avfall"),
        ("Bilar kör alldeles för fort förbi förskolan på Lärkgatan, vi behöver farthinder.", "trafik_parkering"),
    ],
)
async def test_clear_reports_are_routed_to_their_department(
    real_client: httpx.AsyncClient, text: str, department: str
) -> None:
    response = await real_client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)
    assert response.status_code == 200
    body = response.json()
    assert body["department"]["label"] == department
    assert body["language"] == "sv"
    for keyword in body["keywords"]:
        assert text[keyword["start"] : keyword["end"]] == keyword["text"]


async def test_places_are_found_as_keywords(real_client: httpx.AsyncClient) -> None:
    text = "Det är ett stort hål i asfalten på Kungsgatan 5 precis vid övergångsstället."
    body = (await real_client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)).json()
    places = [keyword["text"] for keyword in body["keywords"] if keyword["type"] == "PLATS"]
    assert any("Kungsgatan" in place for place in places)


async def test_english_reports_are_understood_and_other_languages_flagged(real_client: httpx.AsyncClient) -> None:
    english = "The street light outside Storgatan 12 has been broken for two weeks and it is completely dark."
    german = "Die Straßenlaterne vor der Storgatan 12 ist seit zwei Wochen kaputt."
    en, de = [
        (await real_client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)).json()
        for text in (english, german)
    ]
    assert (en["language"], en["department"]["label"]) == ("en", "gata_park")
    assert (de["language"], de["needs_review"]) == ("other", True)


async def test_batch_equals_one_by_one(real_client: httpx.AsyncClient) -> None:
    texts = [
        "Snön har inte plogats på Villavägen.",
        "Tack för den fina nya lekplatsen i Folkets park!",
        "Min mamma har inte fått hemtjänst på tre dagar och ingen svarar i telefon, hon är 92 år.",
    ]
    batch = (
        await real_client.post(
            "/v1/classify/batch", json={"items": [{"text": text} for text in texts]}, headers=CLASSIFY_HEADERS
        )
    ).json()["results"]
    for text, result in zip(texts, batch, strict=True):
        alone = (await real_client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)).json()
        assert alone["department"]["label"] == result["department"]["label"]
        assert alone["department"]["score"] == pytest.approx(result["department"]["score"], abs=1e-4)
        assert alone["severity"]["label"] == result["severity"]["label"]
