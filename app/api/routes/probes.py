"""Probes and metrics: ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (no API key: for the platform)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import MetricsDep
from app.api.schemas import HealthResponse, ReadinessResponse
from app.audit.database import SchemaState, schema_state

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> HealthResponse:
    """The process is up and answering."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    response_model_exclude_none=True,
    responses={
        503: {
            "model": ReadinessResponse,
            "description": "Not ready: the model is not loaded (model_not_loaded), the database does not answer "
            "(database_unavailable) or its schema is not at the Alembic head (schema_outdated)",
        }
    },
)
async def readyz(request: Request, response: Response) -> ReadinessResponse:
    """Ready when the model is loaded (and taking requests), the audit database answers and its schema is at the
    migrations' head."""
    classifier = getattr(request.app.state, "classifier", None)
    engine = getattr(request.app.state, "engine", None)
    schema = SchemaState("unavailable") if engine is None else await run_in_threadpool(schema_state, engine)
    checks = {
        "model": classifier is not None and classifier.running,
        "database": schema.status != "unavailable",
        "schema": schema.status == "current",
    }
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    if ready:
        return ReadinessResponse(status="ready", checks=checks)
    if not checks["database"]:
        code, message = "database_unavailable", schema.describe()
    elif not checks["schema"]:
        code, message = "schema_outdated", f"{schema.describe()}: run `kommunrouter migrate`"
    else:
        code, message = "model_not_loaded", "the model is not loaded or not taking requests"
    return ReadinessResponse(status="not_ready", checks=checks, code=code, message=message)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Requests and latency by route and status, model batch sizes and time, audit batches and failures,
    predictions, and the reviewers' agreement with the model per department."""
    # In a thread: the feedback agreement is read from the audit database while rendering.
    return Response(await run_in_threadpool(service_metrics.render), media_type=CONTENT_TYPE_LATEST)
