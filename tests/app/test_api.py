"""The classification service over HTTP (httpx over ASGI, the tiny model, a temporary SQLite audit log)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from app.api.schemas import EXAMPLE_TEXT
from app.audit.models import Decision
from app.cli import main as cli_main
from app.config import Settings, get_settings
from app.errors import AuditUnavailable, ConfigurationError
from app.logs import JsonFormatter
from app.main import create_app
from tests.app.conftest import CLASSIFY_HEADERS, serve_app

pytestmark = pytest.mark.anyio

SWEDISH = "Gatlampan på Storgatan 12 är trasig och det är helt mörkt på kvällarna."
ENGLISH = "The street light on Storgatan 12 is broken and it is dark in the evenings."
GERMAN = "Die Straßenlaterne in der Storgatan ist seit zwei Wochen kaputt."


async def classify(client: httpx.AsyncClient, text: str, **fields: Any) -> httpx.Response:
    return await client.post("/v1/classify", json={"text": text, **fields}, headers=CLASSIFY_HEADERS)


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A decision without what differs between two calls (ids, timings)."""
    return {key: value for key, value in result.items() if key not in ("request_id", "latency_ms")}


def assert_same_decision(a: dict[str, Any], b: dict[str, Any]) -> None:
    a, b = comparable(a), comparable(b)
    assert a["department"]["label"] == b["department"]["label"]
    assert a["department"]["score"] == pytest.approx(b["department"]["score"], abs=1e-5)
    for task in ("sentiment", "severity"):
        assert a[task]["label"] == b[task]["label"]
        assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-5)
    assert [(k["start"], k["end"], k["type"]) for k in a["keywords"]] == [
        (k["start"], k["end"], k["type"]) for k in b["keywords"]
    ]
    assert (a["needs_review"], a["routed_to"], a["language"]) == (b["needs_review"], b["routed_to"], b["language"])


async def test_classify_answers_a_complete_decision(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await classify(client, SWEDISH, case_id="KS-2024-1", metadata={"kanal": "e-tjänst"})
    assert response.status_code == 200
    body = response.json()
    manifest = app.state.manifest
    assert body["request_id"] == response.headers["X-Request-ID"]
    department = body["department"]
    assert department["label"] in manifest.tasks["department"].label_ids
    alternatives = department["alternatives"]
    assert len(alternatives) == 3
    assert department["label"] not in [a["label"] for a in alternatives]
    scores = [department["score"]] + [a["score"] for a in alternatives]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    severity = body["severity"]
    assert severity["level"] == manifest.tasks["severity"].label_ids.index(severity["label"]) + 1
    assert body["sentiment"]["label"] in manifest.tasks["sentiment"].label_ids
    for keyword in body["keywords"]:
        assert SWEDISH[keyword["start"] : keyword["end"]] == keyword["text"]
        assert keyword["type"] in ("PLATS", "OBJEKT")
    assert body["language"] == "sv"
    assert body["routed_to"] == department["label"]  # no routing table: departments route to their id
    bands = manifest.confidence_bands  # the export chose them on dev
    assert department["confidence_band"] == bands.band(department["score"])
    assert body["needs_review"] == (department["confidence_band"] == "low")
    assert body["model_version"] == "tiny-test"
    assert body["latency_ms"] > 0


async def test_the_decision_is_in_the_audit_log_before_the_answer(client: httpx.AsyncClient, app: FastAPI) -> None:
    body = (await classify(client, SWEDISH, case_id="KS-2024-2")).json()
    with Session(app.state.engine) as session:
        row = session.get(Decision, body["request_id"])
    assert row is not None
    assert row.department == body["department"]["label"]


async def test_without_the_audit_log_no_decision_is_returned(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_write(_record: Any) -> None:
        raise AuditUnavailable("the audit database is unavailable (OperationalError)")

    monkeypatch.setattr(app.state.audit_writer, "write", failing_write)
    single = await classify(client, SWEDISH)
    batch = await client.post("/v1/classify/batch", json={"items": [{"text": SWEDISH}]}, headers=CLASSIFY_HEADERS)
    for response in (single, batch):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "audit_unavailable"
    assert app.state.metrics.registry.get_sample_value("kommunrouter_audit_write_failures_total") == 2


async def test_routing_table_and_review_threshold(make_settings: Callable[..., Settings]) -> None:
    departments = ["gata_park", "trafik_parkering", "vatten_avlopp", "avfall", "miljo_halsa"]
    departments += ["bygg", "skola", "omsorg", "kultur_fritid", "kommun_ovrigt"]
    table = {department: f"{department}@kommun.example" for department in departments}
    async with serve_app(create_app(make_settings(routing_table=table, review_threshold=0.0))) as client:
        swedish, english, german = [(await classify(client, text)).json() for text in (SWEDISH, ENGLISH, GERMAN)]
        labels = (await client.get("/v1/labels", headers=CLASSIFY_HEADERS)).json()
    assert swedish["routed_to"] == f"{swedish['department']['label']}@kommun.example"
    assert (swedish["language"], swedish["needs_review"]) == ("sv", False)
    assert (english["language"], english["needs_review"]) == ("en", False)
    assert (german["language"], german["needs_review"]) == ("other", True)
    assert {item["label"]: item["routed_to"] for item in labels["department"]} == table
    async with serve_app(create_app(make_settings(review_threshold=1.0))) as client:
        assert (await classify(client, SWEDISH)).json()["needs_review"] is True


async def test_a_routing_table_with_an_unknown_department_stops_start_up(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(routing_table={"brandkaren": "112"}))
    with pytest.raises(ConfigurationError, match="brandkaren"):
        async with serve_app(app):
            pass
    assert isinstance(app.state.startup_error, ConfigurationError)


async def test_batch_keeps_order_and_answers_each_bad_item_in_its_place(client: httpx.AsyncClient) -> None:
    items: list[Any] = [
        {"text": SWEDISH, "case_id": "A-1"},
        {"text": ""},
        {"text": "   \n"},
        "not an object",
        {"text": 5},
        {"text": "x" * 10_001},
        {"text": "Hål i vägen\x07"},
        {"text": "Hål i vägen", "unknown": 1},
        {"text": ENGLISH},
    ]
    response = await client.post("/v1/classify/batch", json={"items": items}, headers=CLASSIFY_HEADERS)
    assert response.status_code == 200
    results = response.json()["results"]
    codes = [result.get("error", {}).get("code") for result in results]
    assert codes == [
        None,
        "empty_text",
        "empty_text",
        "validation_error",
        "validation_error",
        "text_too_long",
        "invalid_text",
        "validation_error",
        None,
    ]
    assert all(result["error"]["message"] for result in results if "error" in result)
    assert_same_decision(results[0], (await classify(client, SWEDISH)).json())
    assert_same_decision(results[8], (await classify(client, ENGLISH)).json())
    assert results[0]["request_id"] != results[8]["request_id"]


async def test_a_batch_over_its_limit_is_refused(make_settings: Callable[..., Settings]) -> None:
    async with serve_app(create_app(make_settings(max_batch_items=3))) as client:
        items = [{"text": SWEDISH}] * 4
        response = await client.post("/v1/classify/batch", json={"items": items}, headers=CLASSIFY_HEADERS)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "batch_too_large"
        response = await client.post("/v1/classify/batch", json={"items": items[:3]}, headers=CLASSIFY_HEADERS)
        assert response.status_code == 200 and len(response.json()["results"]) == 3


async def test_concurrent_requests_share_model_calls_and_match_one_by_one(
    make_settings: Callable[..., Settings],
) -> None:
    texts = [f"{SWEDISH} Ärende {i}." + " Det är bråttom." * (i % 4) for i in range(16)]
    app = create_app(make_settings(max_batch_wait_ms=50.0, max_batch_size=32))
    async with serve_app(app) as client:
        one_by_one = [(await classify(client, text)).json() for text in texts]
        calls_before = app.state.metrics.model_calls()
        concurrent = await asyncio.gather(*(classify(client, text) for text in texts))
        calls = app.state.metrics.model_calls() - calls_before
    assert calls_before == len(texts)
    assert 1 <= calls < len(texts) / 2
    for alone, together in zip(one_by_one, concurrent, strict=True):
        assert together.status_code == 200
        assert_same_decision(alone, together.json())


async def test_shutdown_finishes_the_requests_in_flight(app: FastAPI) -> None:
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kommunrouter.test") as client:
        requests = [asyncio.ensure_future(classify(client, f"{SWEDISH} {i}")) for i in range(6)]
        while app.state.in_flight.count < len(requests):
            await asyncio.sleep(0)
        await lifespan.__aexit__(None, None, None)
        responses = await asyncio.gather(*requests)
    assert [response.status_code for response in responses] == [200] * 6
    assert not app.state.classifier.running


async def test_model_summary_and_labels(client: httpx.AsyncClient, app: FastAPI) -> None:
    model = (await client.get("/v1/model", headers=CLASSIFY_HEADERS)).json()
    manifest = app.state.manifest
    assert model["model_version"] == "tiny-test"
    assert model["execution_provider"] == "CPUExecutionProvider"
    assert model["labels"]["department"] == manifest.tasks["department"].label_ids
    assert model["reviews_by_band"] is True and model["auto_route_band"] == "medium"
    assert model["review_threshold"] == manifest.confidence_bands.lowest_score("medium")
    assert model["confidence_bands"] == manifest.confidence_bands.model_dump()
    assert model["files"] == manifest.files
    labels = (await client.get("/v1/labels", headers=CLASSIFY_HEADERS)).json()
    assert [item["label"] for item in labels["severity"]] == ["lag", "medel", "hog", "akut"]
    assert [item["level"] for item in labels["severity"]] == [1, 2, 3, 4]
    assert {item["label"] for item in labels["keywords"]} == {"PLATS", "OBJEKT"}
    assert labels["department"][0]["name"] == "Gata och park"


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"model": True, "database": True, "schema": True}}


async def test_an_unreachable_database_is_not_ready_and_refuses_decisions(
    make_settings: Callable[..., Settings],
) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"
    async with serve_app(create_app(make_settings(database_url=unreachable))) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert (body["status"], body["code"]) == ("not_ready", "database_unavailable")
        assert body["checks"] == {"model": True, "database": False, "schema": False}
        response = await classify(client, SWEDISH)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "audit_unavailable"


async def test_metrics(client: httpx.AsyncClient) -> None:
    decision = (await classify(client, SWEDISH)).json()
    await classify(client, "")
    text = (await client.get("/metrics")).text
    assert 'kommunrouter_http_requests_total{method="POST",route="/v1/classify",status="200"} 1.0' in text
    assert 'kommunrouter_http_requests_total{method="POST",route="/v1/classify",status="422"} 1.0' in text
    assert 'kommunrouter_http_request_duration_seconds_count{route="/v1/classify",status="200"} 1.0' in text
    assert "kommunrouter_model_batch_size_count 1.0" in text
    assert "kommunrouter_model_inference_seconds_count 1.0" in text
    assert "kommunrouter_audit_write_failures_total 0.0" in text
    assert f'kommunrouter_predictions_total{{department="{decision["department"]["label"]}"}} 1.0' in text


async def test_swagger_and_redoc_work_without_network(client: httpx.AsyncClient) -> None:
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = (await client.get(page)).text
        assert f"/static-offline-docs/{asset}" in html
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
        assert (await client.get(f"/static-offline-docs/{asset}")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    request_body = schema["components"]["schemas"]["ClassifyRequest"]
    assert request_body["examples"][0]["text"] == EXAMPLE_TEXT
    assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])


async def test_logs_are_json_with_the_request_id_and_never_the_text(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Min granne Sven Svensson på Hemliga gatan 7 spelar hög musik"
    with caplog.at_level(logging.DEBUG):
        response = await classify(client, secret, case_id="KS-9")
        await classify(client, secret + "\x00")
        await client.post(
            "/v1/classify/batch", json={"items": [{"text": secret}, {"text": 1}]}, headers=CLASSIFY_HEADERS
        )
    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    access = [line for line in lines if line["logger"] == "app.access"]
    assert access[0]["request_id"] == response.headers["X-Request-ID"]
    assert (access[0]["route"], access[0]["status"]) == ("/v1/classify", 200)
    for line in lines:
        assert "Svensson" not in json.dumps(line, ensure_ascii=False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def test_serve_fails_fast_when_the_artifact_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    monkeypatch.setenv("KOMMUNROUTER_MODEL_DIR", str(tmp_path / "no-model"))
    monkeypatch.setenv("KOMMUNROUTER_DATABASE_URL", f"sqlite:///{tmp_path}/audit.db")
    monkeypatch.setattr(sys, "argv", ["kommunrouter", "serve", "--host", "127.0.0.1", "--port", "0"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli_main()
    finally:
        get_settings.cache_clear()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert f"error: invalid model artifact at {tmp_path / 'no-model'}: the directory does not exist" in captured.err
    failure = [json.loads(line) for line in captured.out.splitlines() if "start-up failed" in line]
    assert failure and failure[0]["level"] == "ERROR"


@pytest.mark.slow
def test_kommunrouter_serve_runs_uvicorn_and_stops_cleanly(settings: Settings, tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "KOMMUNROUTER_MODEL_DIR": str(settings.model_dir),
        "KOMMUNROUTER_DATABASE_URL": settings.database_url,
        "KOMMUNROUTER_OPEN_ACCESS": "true",
    }
    # `python -m app.cli` runs this checkout's code (the installed script may belong to another editable checkout).
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            response = httpx.post(f"{base}/v1/classify", json={"text": SWEDISH})
            assert response.status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then ends with the signal it received.
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines[-1]["message"].startswith("Finished server process")
    assert any(line["message"] == "stopped" for line in lines)
    assert any("OPEN ACCESS" in line["message"] and line["level"] == "WARNING" for line in lines)
    access = [line for line in lines if line["logger"] == "app.access" and line["route"] == "/v1/classify"]
    assert access[0]["request_id"] == response.headers["X-Request-ID"]
    assert "Gatlampan" not in log_path.read_text()


async def test_an_unexpected_error_is_a_json_500_that_logs_no_data(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_text: str) -> Any:
        raise RuntimeError(f"could not handle {SWEDISH!r}")

    monkeypatch.setattr(app.state.classifier, "classify", broken)
    # Answered inside the app: nothing reaches the server, which would log the message.
    response = await classify(client, SWEDISH)
    assert response.status_code == 500
    assert response.headers["X-Request-ID"]
    assert response.json()["error"]["code"] == "internal_error"
    logged = [JsonFormatter().format(record) for record in caplog.records if record.name == "app.api.errors"]
    assert logged and "RuntimeError" in logged[0] and "broken" in logged[0]
    assert "Gatlampan" not in "".join(logged)
