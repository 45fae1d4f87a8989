"""API keys per client with scopes; an explicit open mode for local demos."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from app.api.security import AccessControl, hash_api_key
from app.config import Settings
from app.errors import AuthenticationRequired, ConfigurationError, PermissionDenied
from app.main import create_app
from tests.app.conftest import API_KEYS, CLASSIFY_HEADERS, FEEDBACK_HEADERS, serve_app

pytestmark = pytest.mark.anyio

REPORT = {"text": "Soptunnan på Björkvägen 3 har inte tömts."}


async def test_no_key_is_401(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("POST", "/v1/classify"),
        ("POST", "/v1/classify/batch"),
        ("GET", "/v1/model"),
        ("GET", "/v1/labels"),
    ):
        response = await client.request(method, path, json=REPORT if method == "POST" else None)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


async def test_an_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/classify", json=REPORT, headers={"X-API-Key": "gissad-nyckel"})
    assert response.status_code == 401
    assert "not valid" in response.json()["error"]["message"]


async def test_a_key_without_the_scope_is_403(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/classify", json=REPORT, headers=FEEDBACK_HEADERS)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden" and "classify" in error["message"]


async def test_a_key_with_the_scope_is_served(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/classify", json=REPORT, headers=CLASSIFY_HEADERS)).status_code == 200


async def test_probes_metrics_and_docs_need_no_key(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_open_mode_serves_without_keys_and_says_so(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with serve_app(create_app(make_settings(open_access=True, api_keys={}))) as client:
            assert (await client.post("/v1/classify", json=REPORT)).status_code == 200
    assert any("OPEN ACCESS" in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_access_control_grants_scopes_by_key_hash() -> None:
    access = AccessControl({"etjanst": f"{hash_api_key('k1')}|classify, feedback"}, open_access=False)
    assert access.authorize("k1", "classify") == "etjanst"
    assert access.authorize("k1", "feedback") == "etjanst"
    with pytest.raises(PermissionDenied):
        access.authorize("k1", "audit")
    with pytest.raises(AuthenticationRequired):
        access.authorize(hash_api_key("k1"), "classify")  # the stored hash is not a key
    with pytest.raises(AuthenticationRequired):
        access.authorize(None, "classify")
    assert AccessControl({}, open_access=True).authorize(None, "audit") == "open-access"


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"a": "k1|classify"}, "sha256:"),
        ({"a": "sha256:abc|classify"}, "sha256:"),
        ({"a": f"{hash_api_key('k1')}|classify,admin"}, "scopes"),
        ({"a": f"{hash_api_key('k1')}"}, "scopes"),
        ({"a": f"{hash_api_key('k1')}|classify", "b": f"{hash_api_key('k1')}|audit"}, "same key"),
    ],
)
def test_invalid_key_configuration_fails_at_start(
    make_settings: Callable[..., Settings], keys: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        create_app(make_settings(api_keys=keys))


def test_the_configured_form_is_the_sha256_of_the_key() -> None:
    assert hash_api_key(API_KEYS["classifier"]).startswith("sha256:")
    assert len(hash_api_key("x")) == len("sha256:") + 64
