"""Engines and schema migrations of the audit database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from app.errors import AuditUnavailable, ConfigurationError, SchemaOutdated

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
# The PostgreSQL advisory lock that serialises concurrent migrations (any constant 64-bit key: "kommunro").
MIGRATION_LOCK_KEY = 0x6B6F6D6D756E726F
POSTGRES_CONNECT_TIMEOUT_S = 5


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for in-memory databases)."""
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return None
    return Path(url.database)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (audit queries) run while the writer commits; secure_delete overwrites purged texts
    # instead of leaving them in free pages of the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for the audit database; for a SQLite file it creates the parent directory and enables WAL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"not a valid database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        database_file = _sqlite_file(parsed)
        if database_file is not None:
            database_file.parent.mkdir(parents=True, exist_ok=True)
        # The audit writer commits from a worker thread: connections must be usable across threads.
        engine = create_engine(
            parsed,
            hide_parameters=True,  # error messages must not quote stored (redacted) report text into the logs
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    # pre_ping replaces connections that a database restart or failover closed, instead of failing a write.
    return create_engine(parsed, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args)


def database_is_reachable(engine: Engine) -> bool:
    """Whether a connection to the audit database can run a query now (for readiness probes)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("audit database unreachable: %s", exc.__class__.__name__)
        return False
    return True


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest Alembic revision of the migrations this version ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


@dataclass(frozen=True)
class SchemaState:
    """Whether the audit database answers and its schema is the one this version needs."""

    status: Literal["current", "outdated", "unavailable"]
    revision: str | None = None

    def describe(self) -> str:
        if self.status == "unavailable":
            return "the audit database is unavailable"
        found = "has no schema" if self.revision is None else f"is at schema revision {self.revision}"
        return f"the audit database {found}; this version needs revision {head_revision()}"


def schema_state(engine: Engine) -> SchemaState:
    """The audit database's schema against the migrations' head (for readiness, and the check at start)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        logger.warning("audit database unreachable: %s", exc.__class__.__name__)
        return SchemaState("unavailable")
    return SchemaState("current" if revision == head_revision() else "outdated", revision)


def require_current_schema(engine: Engine) -> None:
    """Raise SchemaOutdated (one line naming ``kommunrouter migrate``) unless the schema is at the head; an
    unreachable database passes (readiness reports it, and the service starts when it comes back)."""
    state = schema_state(engine)
    if state.status == "outdated":
        raise SchemaOutdated(
            f"{state.describe()}: run `kommunrouter migrate` first (or set KOMMUNROUTER_MIGRATE_ON_START=true)"
        )


def reclaim_purged_text(engine: Engine) -> None:
    """Make removed texts leave the database files, where the backend allows it.

    SQLite (with secure_delete) has zeroed them in the new page versions; a checkpoint copies those into the
    database file and empties the write-ahead log that still holds the old ones. PostgreSQL keeps old row
    versions until VACUUM reuses their space: that is left to autovacuum (or an operator's VACUUM FULL).
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        busy, _, _ = connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).one()
    if busy:
        logger.warning("the SQLite write-ahead log is in use; purged texts leave it at the next checkpoint")


@contextmanager
def audit_database_errors() -> Iterator[None]:
    """Turn a failing audit database (connection lost, server down) into AuditUnavailable (HTTP 503)."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise AuditUnavailable(f"the audit database is unavailable ({exc.__class__.__name__})") from exc


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise ConfigurationError(f"the Alembic migrations are not at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not a main option: ini interpolation would mangle a "%" in a password.
    config.attributes["database_url"] = url
    return config


def _migrate(url: str, revision: str, *, downgrade: bool) -> None:
    from alembic import command

    direction = "downgrading" if downgrade else "upgrading"
    logger.info("%s the audit database %s to %s", direction, make_url(url).render_as_string(), revision)
    try:
        (command.downgrade if downgrade else command.upgrade)(_alembic_config(url), revision)
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot migrate the audit database: {exc.__class__.__name__}: {exc}") from exc


def upgrade_database(url: str, *, revision: str = "head") -> None:
    """Upgrade the audit database schema to ``revision`` (creates it on an empty database)."""
    _migrate(url, revision, downgrade=False)


def downgrade_database(url: str, *, revision: str) -> None:
    """Downgrade the audit database schema to ``revision`` ("base" removes every audit table)."""
    _migrate(url, revision, downgrade=True)
