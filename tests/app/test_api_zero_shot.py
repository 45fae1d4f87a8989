"""A zero-shot artifact (the tiny model trained on no labelled report) is served like any other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import Settings
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app

pytestmark = pytest.mark.anyio


async def test_a_zero_shot_artifact_serves_through_the_app(
    make_settings: Callable[..., Settings], tiny_zero_shot_artifact: Path
) -> None:
    text = "Gatlampan på Storgatan 12 är trasig"
    async with serve_app(create_app(make_settings(model_dir=tiny_zero_shot_artifact))) as client:
        response = await client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)
        model = await client.get("/v1/model", headers=CLASSIFY_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["department"]["label"] and body["keywords"] == []
    assert model.status_code == 200 and model.json()["provenance"]["zero_shot"] is True
