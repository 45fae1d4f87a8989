"""Dependencies of the routes: the objects the lifespan puts on ``app.state`` and a database session.

Access control (API keys, scopes) lives in :mod:`app.api.security`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.api.metrics import ServiceMetrics
from app.config import Settings
from app.decisions import DecisionService
from app.inference.classifier import Classifier


def app_state(name: str) -> Callable[[Request], Any]:
    """A dependency returning ``app.state.<name>`` (set by ``create_app`` or the lifespan)."""

    def from_app_state(request: Request) -> Any:
        return getattr(request.app.state, name)

    return from_app_state


SettingsDep = Annotated[Settings, Depends(app_state("settings"))]
ClassifierDep = Annotated[Classifier, Depends(app_state("classifier"))]
DecisionsDep = Annotated[DecisionService, Depends(app_state("decisions"))]
MetricsDep = Annotated[ServiceMetrics, Depends(app_state("metrics"))]
EngineDep = Annotated[Engine, Depends(app_state("engine"))]


def get_db_session(engine: EngineDep) -> Iterator[Session]:
    """A session on the audit database for one request; the route commits what it changes."""
    with Session(engine) as session:
        yield session


DbSession = Annotated[Session, Depends(get_db_session)]
