"""Bad input never gives a 500: each case is a 4xx with the one error shape and a stable code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app

pytestmark = pytest.mark.anyio

JSON_HEADERS = {**CLASSIFY_HEADERS, "Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


async def post_text(client: httpx.AsyncClient, text: Any) -> httpx.Response:
    return await client.post("/v1/classify", json={"text": text}, headers=CLASSIFY_HEADERS)


@pytest.mark.parametrize("text", ["", " ", "\n\t \r\n", "\u3000\u00a0"])
async def test_empty_or_whitespace_text(client: httpx.AsyncClient, text: str) -> None:
    assert_error(await post_text(client, text), 422, "empty_text")


async def test_text_over_the_limit(client: httpx.AsyncClient) -> None:
    error = assert_error(await post_text(client, "å" * 10_001), 422, "text_too_long")
    assert "10000" in error["message"]
    assert (await post_text(client, "å" * 10_000)).status_code == 200


async def test_the_text_limit_is_configurable(make_settings: Callable[..., Settings]) -> None:
    async with serve_app(create_app(make_settings(max_text_chars=20))) as client:
        assert_error(await post_text(client, "Gatlampan är trasig igen"), 422, "text_too_long")


@pytest.mark.parametrize("body", [b'{"text": "Hej', b"{'text': 'Hej'}", b'{"text": "a",}', b"null x"])
async def test_invalid_json(client: httpx.AsyncClient, body: bytes) -> None:
    assert_error(await client.post("/v1/classify", content=body, headers=JSON_HEADERS), 400, "invalid_json")


@pytest.mark.parametrize(
    "payload",
    [
        {"text": 123},
        {"text": None},
        {"text": ["Hej"]},
        {},
        {"text": "Hej", "case_id": 5},
        {"text": "Hej", "metadata": "kanal"},
        {"text": "Hej", "case_id": "KS\x00-1"},
        {"text": "Hej", "metadata": {"k\x1b": "v"}},
        {"text": "Hej", "okänt_fält": 1},
        [{"text": "Hej"}],
    ],
)
async def test_wrong_types_and_fields(client: httpx.AsyncClient, payload: Any) -> None:
    error = assert_error(
        await client.post("/v1/classify", json=payload, headers=CLASSIFY_HEADERS), 422, "validation_error"
    )
    assert error["details"] and all({"loc", "msg", "type"} <= set(detail) for detail in error["details"])
    assert all("input" not in detail for detail in error["details"])  # never echoes the text


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_numbers_in_metadata(client: httpx.AsyncClient, number: bytes) -> None:
    body = b'{"text": "Hej", "metadata": {"antal": ' + number + b"}}"
    assert_error(await client.post("/v1/classify", content=body, headers=JSON_HEADERS), 422, "validation_error")


async def test_invalid_utf8(client: httpx.AsyncClient) -> None:
    body = b'{"text": "Gatlampan p\xe5 Storgatan"}'  # Latin-1 å
    assert_error(await client.post("/v1/classify", content=body, headers=JSON_HEADERS), 400, "invalid_utf8")


@pytest.mark.parametrize("text", ["Hål\x00i vägen", "Hål i vägen\x07", "\x1b[31mrött", "Hål\x85", "Hål \x7f"])
async def test_control_characters(client: httpx.AsyncClient, text: str) -> None:
    error = assert_error(await post_text(client, text), 422, "invalid_text")
    assert "U+" in error["message"]


async def test_a_lone_surrogate_escape(client: httpx.AsyncClient) -> None:
    body = b'{"text": "H\\u00e5l \\ud800 i v\\u00e4gen"}'
    assert_error(await client.post("/v1/classify", content=body, headers=JSON_HEADERS), 422, "invalid_text")


async def test_a_lone_surrogate_as_raw_bytes(client: httpx.AsyncClient) -> None:
    # Python's json accepts surrogates encoded in UTF-8 form; they must not reach the tokenizer or database.
    body = b'{"text": "H\xed\xa0\x80l i v\xc3\xa4gen"}'
    response = await client.post("/v1/classify", content=body, headers=JSON_HEADERS)
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] in ("invalid_utf8", "invalid_text")


async def test_line_breaks_and_tabs_are_text(client: httpx.AsyncClient) -> None:
    assert (await post_text(client, "Hej!\r\n\tGatlampan är trasig.\n")).status_code == 200


@pytest.fixture
async def small_body_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(make_settings(max_body_bytes=1_000))) as client:
        yield client


async def test_a_body_over_the_size_limit(small_body_client: httpx.AsyncClient) -> None:
    response = await small_body_client.post("/v1/classify", json={"text": "a" * 2_000}, headers=CLASSIFY_HEADERS)
    assert "1000" in assert_error(response, 413, "payload_too_large")["message"]


async def test_a_streamed_body_over_the_size_limit(small_body_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 200
        yield b'"}'

    # No Content-Length: the limit applies to the bytes as they arrive.
    response = await small_body_client.post("/v1/classify", content=chunks(), headers=JSON_HEADERS)
    assert_error(response, 413, "payload_too_large")


async def test_a_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/classify", content="text=Hej", headers={**CLASSIFY_HEADERS, "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    response = await client.post("/v1/classify", content=b'{"text": "Hej"}', headers=CLASSIFY_HEADERS)
    assert_error(response, 415, "unsupported_media_type")


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing", headers=CLASSIFY_HEADERS), 404, "not_found")
    assert_error(await client.get("/v1/classify", headers=CLASSIFY_HEADERS), 405, "method_not_allowed")


@pytest.mark.parametrize("items", [{"text": "Hej"}, "Hej", None])
async def test_a_batch_whose_items_are_not_a_list(client: httpx.AsyncClient, items: Any) -> None:
    response = await client.post("/v1/classify/batch", json={"items": items}, headers=CLASSIFY_HEADERS)
    assert_error(response, 422, "validation_error")
