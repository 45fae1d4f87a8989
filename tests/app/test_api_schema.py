"""Property-based run over the OpenAPI schema: no 5xx, every answer documented and matching its schema."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from tests.app.conftest import AUDIT_HEADERS, serve_app

REPO = Path(__file__).parents[2]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 25


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_to_its_schema(make_settings: Callable[..., Settings], mode: GenerationMode) -> None:
    # Small limits let generated data reach them. schemathesis runs the app (and its lifespan) in-process.
    app = create_app(make_settings(max_text_chars=200, max_batch_items=8, max_body_bytes=20_000))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"POST /v1/classify", "POST /v1/classify/batch", "GET /v1/model", "GET /readyz"} <= {
        f"{operation.method.upper()} {operation.path}" for operation in operations
    }
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not (operation.body or operation.query or operation.path_parameters):
            continue  # nothing to get wrong in a bare GET

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def keeps_to_schema(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUDIT_HEADERS, checks=CHECKS)

        keeps_to_schema()
    # The run reached the model: generated reports were classified (positive) or refused with a 4xx (negative).
    registry = app.state.metrics.registry
    answered = {
        status: registry.get_sample_value(
            "kommunrouter_http_requests_total", {"route": "/v1/classify", "method": "POST", "status": status}
        )
        or 0
        for status in ("200", "400", "422")
    }
    assert answered["200"] > 0 if mode == GenerationMode.POSITIVE else answered["400"] + answered["422"] > 0


# --- schemathesis as a client runs it: `st run URL/openapi.json --checks all` against the served app -------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``kommunrouter serve`` of this checkout in a subprocess, with ``settings``; yields its base URL."""
    port = _free_port()
    env = os.environ | {f"KOMMUNROUTER_{name.upper()}": value for name, value in _environment(settings).items()}
    command = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)]
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            yield base
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _environment(settings: Settings) -> dict[str, str]:
    values = settings.model_dump(mode="json", exclude_defaults=True)
    return {name: value if isinstance(value, str) else json.dumps(value) for name, value in values.items()}


@pytest.mark.slow
@pytest.mark.parametrize("open_access", [False, True], ids=["keyed", "open-access"])
def test_schemathesis_with_all_checks_finds_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, open_access: bool
) -> None:
    """Every phase (examples, coverage, fuzzing, stateful) and every check, positive data acceptance and negative
    data rejection included: what the document declares valid is accepted, what it declares invalid refused."""
    settings = make_settings(max_text_chars=200, max_batch_items=8, open_access=open_access)
    with served(settings, tmp_path) as base:
        headers = [] if open_access else ["-H", f"X-API-Key: {AUDIT_HEADERS['X-API-Key']}"]
        run = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", f"{base}/openapi.json", "--checks", "all", *headers]
            + ["--max-examples", "20", "--seed", "20", "--no-color"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stdout[-6000:]
    assert "No issues found" in run.stdout


@pytest.mark.anyio
@pytest.mark.parametrize("open_access", [False, True], ids=["keyed", "open-access"])
async def test_the_document_states_the_running_services_limits_labels_and_access(
    make_settings: Callable[..., Settings], open_access: bool
) -> None:
    app = create_app(make_settings(max_text_chars=321, max_batch_items=7, open_access=open_access))
    async with serve_app(app) as client:
        schema = (await client.get("/openapi.json")).json()
        labels = (await client.get("/v1/labels", headers=AUDIT_HEADERS)).json()
    components = schema["components"]
    assert components["schemas"]["ClassifyRequest"]["properties"]["text"]["maxLength"] == 321
    assert components["schemas"]["BatchRequest"]["properties"]["items"]["maxItems"] == 7
    department = components["schemas"]["FeedbackRequest"]["properties"]["department"]["anyOf"][0]
    assert department["enum"] == [label["label"] for label in labels["department"]]
    operations = [operation for path in schema["paths"].values() for operation in path.values()]
    if open_access:
        assert "securitySchemes" not in components
        assert not any("security" in operation for operation in operations)
    else:
        assert "X-API-Key" in json.dumps(components["securitySchemes"])
        assert any("security" in operation for operation in operations)
