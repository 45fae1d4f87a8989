"""Property-based run over the OpenAPI schema: no 5xx, every answer documented and matching its schema."""

from __future__ import annotations

from collections.abc import Callable

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
from tests.app.conftest import AUDIT_HEADERS

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
