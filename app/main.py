"""The FastAPI application: ``create_app(settings)``, its lifespan (model, audit database) and ``run_server``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from sqlalchemy import Engine

from app.api.errors import install_error_handlers
from app.api.metrics import ServiceMetrics
from app.api.middleware import BodyLimitMiddleware, InFlightRequests, RequestContextMiddleware
from app.api.routes import audit, classify, feedback, meta, probes
from app.api.security import AccessControl
from app.audit.database import database_is_reachable, make_engine, upgrade_database
from app.audit.writer import AuditWriter
from app.config import Settings, get_settings
from app.decisions import DecisionService
from app.errors import ConfigurationError, KommunrouterError
from app.inference.classifier import Classifier, load_classifier
from app.inference.model import ReportModel
from app.logs import configure_logging

logger = logging.getLogger(__name__)

# How long shutdown waits for requests in flight (uvicorn has usually waited for them already).
SHUTDOWN_GRACE_S = 30.0

DESCRIPTION = """
Routes citizen reports of a Swedish municipality (felanmälningar, synpunkter, frågor) with one model:
department and destination queue, sentiment, severity and keyword spans (places and objects).
Every decision is written to an audit log before it is returned.

Send the API key in the `X-API-Key` header (the lock button below). Error answers all have the shape
`{"error": {"code": "...", "message": "..."}}`.
"""


def _package_version() -> str:
    try:
        return version("kommunrouter")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class _Services:
    """What the lifespan starts and stops."""

    model: ReportModel
    classifier: Classifier
    engine: Engine
    writer: AuditWriter


def _warn_open_access(settings: Settings) -> None:
    if settings.open_access:
        logger.warning(
            "OPEN ACCESS: every endpoint is served without an API key (KOMMUNROUTER_OPEN_ACCESS=true); "
            "for local demos only"
        )


def _open_audit_database(settings: Settings) -> Engine:
    """The audit database's engine, migrated first when the settings ask for it."""
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start:
        upgrade_database(settings.database_url)
    return engine


def _start_services(app: FastAPI) -> _Services:
    """Load the model and open the audit log; a failure is kept on ``app.state.startup_error`` for the CLI."""
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    try:
        classifier = load_classifier(settings, on_model_call=metrics.observe_model_call)
        model = classifier.model
        engine = _open_audit_database(settings)
    except KommunrouterError as exc:
        logger.error("start-up failed: %s", exc)
        app.state.startup_error = exc
        raise
    if not database_is_reachable(engine):
        logger.warning("the audit database is not reachable yet: /readyz answers 503 and decisions 503 until it is")
    writer = AuditWriter(engine, settings.text_storage, on_batch=metrics.observe_audit_batch)
    metrics.watch_feedback_agreement(engine)
    classifier.start()
    return _Services(model, classifier, engine, writer)


def _publish(app: FastAPI, services: _Services) -> None:
    """Put the started services on ``app.state``, where the route dependencies find them."""
    settings: Settings = app.state.settings
    app.state.manifest = services.model.manifest
    app.state.engine = services.engine
    app.state.audit_writer = services.writer
    app.state.classifier = services.classifier
    app.state.decisions = DecisionService(
        services.classifier, services.writer, app.state.metrics, max_batch_items=settings.max_batch_items
    )
    logger.info(
        "ready: model %s on %s, micro-batches of up to %d texts / %d tokens within %.1f ms",
        services.model.manifest.model_version,
        services.model.provider,
        settings.max_batch_size,
        settings.max_batch_tokens,
        settings.max_batch_wait_ms,
    )


async def _stop_services(app: FastAPI, services: _Services) -> None:
    """Wait for the requests in flight, finish queued model calls and audit writes, then close."""
    if not await app.state.in_flight.wait_idle(SHUTDOWN_GRACE_S):
        logger.warning("stopping with %d requests still in flight", app.state.in_flight.count)
    await services.classifier.close()
    await services.writer.close()
    services.engine.dispose()
    logger.info("stopped")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and open the audit log at start; at shutdown finish queued requests, then close."""
    _warn_open_access(app.state.settings)
    services = _start_services(app)
    _publish(app, services)
    try:
        yield
    finally:
        await _stop_services(app, services)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for ``settings`` (the environment's when None); the model loads when it starts."""
    settings = settings or get_settings()
    app = FastAPIOffline(
        title="kommunrouter",
        version=_package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "classification", "description": "Routing decisions for citizen reports."},
            {"name": "model", "description": "The served model and its taxonomy."},
            {"name": "audit", "description": "The audit log of decisions and reviewers' corrections."},
            {"name": "operations", "description": "Probes and metrics for the platform."},
        ],
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    app.state.access = AccessControl(settings.api_keys, open_access=settings.open_access)
    app.state.in_flight = InFlightRequests()
    app.state.startup_error = None
    install_error_handlers(app)
    # The last added runs first: every answer, a 413 included, gets a request id and is measured.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics, in_flight=app.state.in_flight)
    for router in (classify.router, meta.router, probes.router, feedback.router, audit.router):
        app.include_router(router)
    return app


def run_server(*, host: str, port: int) -> None:
    """Serve the app with uvicorn (one worker: one model in memory, one micro-batcher)."""
    import uvicorn

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid KOMMUNROUTER_* settings: {exc}") from exc
    configure_logging(settings.log_level)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, workers=1, log_config=None, access_log=False, lifespan="on")
    )
    try:
        server.run()
    except SystemExit:
        # uvicorn exits (status 3) when the lifespan fails; the CLI turns the cause into one line and status 1.
        if app.state.startup_error is not None:
            raise app.state.startup_error from None
        raise
