"""Alembic environment of the audit database.

The URL comes from ``upgrade_database`` (``config.attributes["database_url"]``) when the service or the CLI
migrates, else from ``sqlalchemy.url`` in the Alembic config, else from the service settings
(``KOMMUNROUTER_DATABASE_URL``).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from app.audit.database import MIGRATION_LOCK_KEY, make_engine
from app.audit.models import Base
from app.config import get_settings

config = context.config

# Only the `alembic` command configures logging: called from the service, it would replace the service's logging.
if config.config_file_name is not None and "database_url" not in config.attributes:
    fileConfig(config.config_file_name)


def database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return str(url) if url else get_settings().database_url


def run_migrations_offline() -> None:
    """Write the SQL of the migrations instead of running them (`alembic upgrade head --sql`)."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Replicas that migrate at once queue here, each then finds the schema current: without the
                    # lock, the second would fail creating tables the first just created. Held until commit.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
