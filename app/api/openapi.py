"""The OpenAPI document as the contract a case-management system codes against: what it declares valid is
accepted, what it declares invalid is rejected.

FastAPI generates the document from the schemas; this module adds what only the running service knows: the
configured limits (text length, batch size), the served model's labels (feedback is checked against them), and
whether an API key is needed at all (not in open-access mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.artifact import SPAN_TASK, Manifest
from app.config import Settings
from app.inference.text import report_text_pattern

LABEL_FIELDS = ("department", "sentiment", "severity")


def _properties(schema: dict[str, Any], model: str) -> dict[str, Any]:
    properties: dict[str, Any] = schema["components"]["schemas"][model]["properties"]
    return properties


def _string_branch(field: dict[str, Any]) -> dict[str, Any]:
    """The string schema of an optional field (``anyOf: [{type: string}, {type: null}]``), or the field itself."""
    branches = field.get("anyOf", [field])
    return next(branch for branch in branches if branch.get("type") == "string")


def _report_texts(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema of a report text in the document (inlined in batch items, or a property of a request)."""
    if isinstance(node, dict):
        if node.get("pattern") == report_text_pattern():
            yield node
        for value in node.values():
            yield from _report_texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _report_texts(value)


def _apply_limits(schema: dict[str, Any], settings: Settings) -> None:
    for text in _report_texts(schema):
        text["maxLength"] = settings.max_text_chars
    _properties(schema, "BatchRequest")["items"]["maxItems"] = settings.max_batch_items


def _apply_labels(schema: dict[str, Any], manifest: Manifest) -> None:
    feedback = _properties(schema, "FeedbackRequest")
    for task in LABEL_FIELDS:
        _string_branch(feedback[task])["enum"] = list(manifest.tasks[task].label_ids)
    _properties(schema, "KeywordLabel")["type"]["enum"] = list(manifest.tasks[SPAN_TASK].label_ids)


def _drop_security(schema: dict[str, Any]) -> None:
    schema.get("components", {}).pop("securitySchemes", None)
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            for status in ("401", "403"):
                operation.get("responses", {}).pop(status, None)


def service_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with its settings' limits, its model's labels and its access mode.

    Cached once the model is loaded (before that, the labels are unknown and the document says so by omission).
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    settings: Settings = app.state.settings
    _apply_limits(schema, settings)
    if settings.open_access:
        _drop_security(schema)
    manifest: Manifest | None = getattr(app.state, "manifest", None)
    if manifest is not None:
        _apply_labels(schema, manifest)
        app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`service_openapi` at ``/openapi.json``."""
    app.openapi = lambda: service_openapi(app)  # type: ignore[method-assign]
