"""The confidence band beside the department score, needs_review following it, and artifacts without bands."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.api.security import hash_api_key
from app.artifact import MANIFEST_FILE, ConfidenceBands, read_manifest, write_manifest
from app.config import Settings
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app

pytestmark = pytest.mark.anyio

SWEDISH = "Gatlampan utanför Storgatan 12 är trasig och det är helt mörkt på kvällarna."


def artifact_with_bands(source: Path, target: Path, bands: ConfidenceBands | None) -> Path:
    """A copy of an artifact whose manifest has other bands (None: the manifest has no bands key at all, as
    artifacts exported before bands existed)."""
    shutil.copytree(source, target)
    manifest = read_manifest(target)
    if bands is None:
        path = target / MANIFEST_FILE
        path.write_text(manifest.model_dump_json(indent=2, exclude={"confidence_bands"}), encoding="utf-8")
        assert "confidence_bands" not in json.loads(path.read_text(encoding="utf-8"))
    else:
        write_manifest(target, manifest.model_copy(update={"confidence_bands": bands}))
    return target


async def decide(settings: Settings) -> tuple[dict, dict]:  # type: ignore[type-arg]
    async with serve_app(create_app(settings)) as client:
        body = (await client.post("/v1/classify", json={"text": SWEDISH}, headers=CLASSIFY_HEADERS)).json()
        model = (await client.get("/v1/model", headers=CLASSIFY_HEADERS)).json()
    return body, model


async def test_needs_review_follows_the_band(
    tiny_artifact: Path, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # every score is at least medium (threshold 0) and none reaches high (threshold 1)
    artifact = artifact_with_bands(tiny_artifact, tmp_path / "banded", ConfidenceBands(high=1.0, medium=0.0))
    body, model = await decide(make_settings(model_dir=artifact))
    assert body["department"]["confidence_band"] == "medium"
    assert body["needs_review"] is False
    assert model["confidence_bands"]["high"] == 1.0 and model["reviews_by_band"] is True
    body, model = await decide(make_settings(model_dir=artifact, auto_route_band="high"))
    assert (body["department"]["confidence_band"], body["needs_review"]) == ("medium", True)
    assert model["review_threshold"] == 1.0
    # an explicit threshold replaces the bands for the review decision; the band is still answered
    body, model = await decide(make_settings(model_dir=artifact, auto_route_band="high", review_threshold=0.0))
    assert (body["department"]["confidence_band"], body["needs_review"]) == ("medium", False)
    assert model["reviews_by_band"] is False


async def test_an_empty_auto_routed_band_sends_everything_to_review(
    tiny_artifact: Path, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    artifact = artifact_with_bands(tiny_artifact, tmp_path / "empty", ConfidenceBands(high=None, medium=None))
    body, model = await decide(make_settings(model_dir=artifact))
    assert (body["department"]["confidence_band"], body["needs_review"]) == ("low", True)
    assert model["review_threshold"] is None


async def test_an_artifact_without_bands_still_loads_and_reviews_by_its_threshold(
    tiny_artifact: Path, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    artifact = artifact_with_bands(tiny_artifact, tmp_path / "old", None)
    manifest = read_manifest(artifact)
    assert manifest.confidence_bands is None
    body, model = await decide(make_settings(model_dir=artifact))
    assert body["department"]["confidence_band"] is None
    assert body["needs_review"] == (body["department"]["score"] < manifest.routing_threshold)
    assert model["confidence_bands"] is None and model["reviews_by_band"] is False
    assert model["review_threshold"] == manifest.routing_threshold


def test_settings_reject_an_unknown_band() -> None:
    with pytest.raises(ValueError, match="auto_route_band"):
        Settings(auto_route_band="low", api_keys={"x": f"{hash_api_key('k')}|classify"})  # type: ignore[arg-type]
