"""Probes and metrics: ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (no API key: for the platform)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import MetricsDep
from app.api.schemas import HealthResponse, ReadinessResponse
from app.audit.database import database_is_reachable

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> HealthResponse:
    """The process is up and answering."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"model": ReadinessResponse, "description": "The model is not loaded or the database is down"}},
)
async def readyz(request: Request, response: Response) -> ReadinessResponse:
    """Ready when the model is loaded (and taking requests) and the audit database answers."""
    classifier = getattr(request.app.state, "classifier", None)
    engine = getattr(request.app.state, "engine", None)
    checks = {
        "model": classifier is not None and classifier.running,
        "database": engine is not None and await run_in_threadpool(database_is_reachable, engine),
    }
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    return ReadinessResponse(status="ready" if ready else "not_ready", checks=checks)


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
