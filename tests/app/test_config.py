"""Settings: environment variables with the KOMMUNROUTER_ prefix, documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings, settings_markdown_table

README = Path(__file__).parents[2] / "README.md"


def test_readme_configuration_table_matches_the_settings() -> None:
    assert settings_markdown_table() in README.read_text(encoding="utf-8"), (
        "README's configuration table is out of date: paste the output of "
        "`python -c 'from app.config import settings_markdown_table as t; print(t())'`"
    )


def test_environment_variables_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMMUNROUTER_DATABASE_URL", "postgresql+psycopg://u@db/kommun")
    monkeypatch.setenv("KOMMUNROUTER_ROUTING_TABLE", '{"avfall": "renhallning@kommun.se"}')
    monkeypatch.setenv("KOMMUNROUTER_OPEN_ACCESS", "true")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@db/kommun"
    assert settings.routing_table == {"avfall": "renhallning@kommun.se"}
    assert settings.open_access is True


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMMUNROUTER_TEXT_STORAGE", "plain")
    with pytest.raises(ValueError, match="text_storage"):
        Settings()
