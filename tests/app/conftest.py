"""Fixtures of the service tests: settings, a migrated audit database (SQLite, or PostgreSQL when asked), the
app with its lifespan running, and an httpx client over ASGI."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.security import hash_api_key
from app.config import Settings
from app.main import create_app

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"

# Keys of the test clients: one per scope pattern, so tests can check 401 and 403.
API_KEYS = {"classifier": "test-key-classify", "auditor": "test-key-audit", "reviewer": "test-key-feedback"}
CLIENT_SCOPES = {"classifier": "classify", "auditor": "classify,audit,feedback", "reviewer": "feedback"}
CLASSIFY_HEADERS = {"X-API-Key": API_KEYS["classifier"]}
AUDIT_HEADERS = {"X-API-Key": API_KEYS["auditor"]}
FEEDBACK_HEADERS = {"X-API-Key": API_KEYS["reviewer"]}

# Parametrise a test with `@BOTH_DATABASES` to run it on SQLite and on the real PostgreSQL server.
BOTH_DATABASES = pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite audit database migrated once per session; each test gets a copy."""
    from app.audit.database import upgrade_database

    path = tmp_path_factory.mktemp("audit_template") / "audit.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path) -> Iterator[str]:
    """A migrated, empty audit database for one test: SQLite by default; ``"postgres"`` (indirect parameter)
    creates a fresh database on the real server and drops it afterwards."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        path = tmp_path / "audit.db"
        shutil.copyfile(migrated_sqlite, path)
        yield f"sqlite:///{path}"
        return
    from sqlalchemy import create_engine, text

    from app.audit.database import upgrade_database

    name = f"kr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_SERVER}/{name}"
    try:
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_settings(tiny_artifact: Path, database_url: str) -> Callable[..., Settings]:
    """Settings for a test app (the tiny model, the test's database, the test API keys), with overrides. The engine
    is onnxruntime: auto compiles OpenVINO graphs at every start (tests/app/test_engines.py covers it)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model_dir": tiny_artifact,
            "database_url": database_url,
            "open_access": False,
            "api_keys": {client: f"{hash_api_key(key)}|{CLIENT_SCOPES[client]}" for client, key in API_KEYS.items()},
            "max_batch_wait_ms": 5.0,
            "intra_op_threads": 1,
            "engine": "onnxruntime",
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@asynccontextmanager
async def serve_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (model, batcher, audit writer) and yield an httpx client of it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kommunrouter.test") as client:
            yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of the test app, with its lifespan running."""
    async with serve_app(app) as served:
        yield served


# --- audit log -------------------------------------------------------------------------------------------------


@pytest.fixture
def audit_engine(database_url: str) -> Iterator[Any]:
    """An engine on the test's audit database."""
    from app.audit.database import make_engine

    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_record() -> Callable[..., Any]:
    """A factory of DecisionRecords: a report with a personnummer, a phone number and two keywords."""
    from datetime import UTC, datetime

    from app.audit.repository import DecisionRecord

    def make(**overrides: Any) -> DecisionRecord:
        text = "Ring 070-123 45 67 om gatlampan på Storgatan 12, pnr 19800101-1231."
        values: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC),
            "client": "classifier",
            "case_id": "KS 2024/0123",
            "model_version": "tiny-test",
            "artifact_sha256": "ab" * 32,
            "text": text,
            "department": "gata_park",
            "department_score": 0.91,
            "sentiment": "neutral",
            "sentiment_score": 0.7,
            "severity": "medel",
            "severity_score": 0.6,
            "keywords": [
                {"text": "gatlampan", "type": "OBJEKT", "start": 22, "end": 31, "score": 0.9},
                {"text": "Storgatan 12", "type": "PLATS", "start": 35, "end": 47, "score": 0.8},
            ],
            "needs_review": False,
            "routed_to": "gatuenheten",
            "latency_ms": 12.5,
            "metadata": None,
        }
        return DecisionRecord(**(values | overrides))

    return make


@pytest.fixture
def process_database_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point the process settings (what the CLI and the `alembic` command read) at a database URL."""
    from app.config import get_settings

    def point_at(url: str) -> None:
        monkeypatch.setenv("KOMMUNROUTER_DATABASE_URL", url)
        get_settings.cache_clear()

    yield point_at
    get_settings.cache_clear()


def store_decisions(engine: Any, *records: Any, text_storage: Any = "redacted") -> None:
    """Insert decisions straight into the audit log (for tests of what reads it)."""
    from sqlalchemy.orm import Session

    from app.audit.repository import insert_decisions

    with Session(engine) as session, session.begin():
        insert_decisions(session, records=records, text_storage=text_storage)


def review(session: Any, request_id: str, **fields: Any) -> Any:
    """Add a reviewer's feedback (the fields not given are not judged), checked against the default taxonomy."""
    from datetime import UTC, datetime

    from app.audit.repository import add_feedback
    from training.data import load_taxonomy

    taxonomy = load_taxonomy(Path(__file__).parents[2] / "data" / "taxonomy.json")
    tasks = ("department", "sentiment", "severity", "keywords")
    values = dict.fromkeys((*tasks, "reviewer")) | fields
    return add_feedback(
        session,
        request_id=request_id,
        client="reviewer",
        created_at=datetime.now(UTC),
        allowed_labels={task: taxonomy.label_ids(task) for task in tasks},
        **values,
    )
