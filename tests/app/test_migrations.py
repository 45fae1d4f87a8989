"""Alembic migrations of the audit database on SQLite and PostgreSQL: up, down, no drift from the ORM models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from typer.testing import CliRunner

from app.audit.database import MIGRATIONS_DIR, downgrade_database, make_engine, upgrade_database
from app.audit.models import Base
from app.cli import cli
from app.config import Settings
from app.main import create_app
from tests.app.conftest import BOTH_DATABASES, CLASSIFY_HEADERS, serve_app

REPO = Path(__file__).parents[2]
AUDIT_TABLES = {"decisions", "feedback", "decision_keywords"}


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def tables_and_revision(engine: Engine) -> tuple[set[str], str | None]:
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        return set(inspect(connection).get_table_names()) - {"alembic_version"}, revision


@BOTH_DATABASES
def test_migrations_upgrade_and_downgrade_and_match_the_models(database_url: str, audit_engine: Engine) -> None:
    assert tables_and_revision(audit_engine) == (AUDIT_TABLES, head_revision())
    with audit_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    downgrade_database(database_url, revision="base")
    assert tables_and_revision(audit_engine) == (set(), None)
    upgrade_database(database_url)
    assert tables_and_revision(audit_engine) == (AUDIT_TABLES, head_revision())


@BOTH_DATABASES
@pytest.mark.anyio
async def test_the_service_can_migrate_at_start(
    database_url: str, audit_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    downgrade_database(database_url, revision="base")
    app = create_app(make_settings(migrate_on_start=True))
    async with serve_app(app) as client:
        response = await client.post("/v1/classify", json={"text": "Hål i vägen vid skolan"}, headers=CLASSIFY_HEADERS)
    assert response.status_code == 200
    assert tables_and_revision(audit_engine) == (AUDIT_TABLES, head_revision())


def test_kommunrouter_migrate_creates_the_database_and_its_directory(
    tmp_path: Path, process_database_url: Callable[[str], None]
) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'audit.db'}"
    process_database_url(url)
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    assert tables_and_revision(engine) == (AUDIT_TABLES, head_revision())
    engine.dispose()


def test_the_alembic_command_reads_the_url_from_the_settings(
    tmp_path: Path, process_database_url: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    process_database_url(url)
    monkeypatch.chdir(REPO)
    command.upgrade(Config(str(REPO / "alembic.ini")), "head")
    engine = make_engine(url)
    assert tables_and_revision(engine) == (AUDIT_TABLES, head_revision())
    engine.dispose()
