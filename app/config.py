"""Service settings: every field is an environment variable with the prefix ``KOMMUNROUTER_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ExecutionProvider = Literal["cpu", "cuda"]
TextStorage = Literal["redacted", "hash", "none"]
AutoRouteBand = Literal["high", "medium"]


class Settings(BaseSettings):
    """Configuration of the kommunrouter service (read from the environment, never at import time)."""

    model_config = SettingsConfigDict(env_prefix="KOMMUNROUTER_", env_file=None, extra="ignore")

    model_dir: Path = Field(Path("models/default"), description="Directory of the model artifact to serve.")
    database_url: str = Field(
        "sqlite:///var/kommunrouter.db",
        description="SQLAlchemy URL of the audit database (postgresql+psycopg://... in production).",
    )
    migrate_on_start: bool = Field(False, description="Run Alembic migrations when the service starts.")
    open_access: bool = Field(
        False, description="Serve without API keys (local demos only; the log warns when it is on)."
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "API keys as JSON: {client name: 'sha256:<hex of the key>|scope,scope'}; scopes: classify, feedback, audit."
        ),
    )
    execution_provider: ExecutionProvider = Field(
        "cpu", description="onnxruntime execution provider: cpu, or cuda (falls back to cpu when absent)."
    )
    intra_op_threads: int = Field(2, ge=1, description="onnxruntime threads per inference call.")
    max_batch_size: int = Field(32, ge=1, description="Largest micro-batch sent to the model.")
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="How long the micro-batcher waits for more requests before running."
    )
    max_batch_tokens: int = Field(
        256,
        ge=1,
        description=(
            "Most padded tokens (texts x longest text) in one model call; a micro-batch beyond it is split, "
            "shortest texts together. On 2 CPU cores 256 ran the int8 model 2.2x faster than 4096 "
            "(bench/results/inference.json); raise it on a GPU."
        ),
    )
    max_text_chars: int = Field(10_000, ge=1, description="Longest accepted report text, in characters.")
    max_batch_items: int = Field(64, ge=1, description="Most items accepted by /v1/classify/batch.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest accepted request body (413 above).")
    review_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Department score below which needs_review is true; when set, it replaces the confidence bands "
            "(default: the bands of the artifact, or its threshold when it has none)."
        ),
    )
    auto_route_band: AutoRouteBand = Field(
        "medium",
        description=(
            "Lowest confidence band routed without review: medium (only low needs review) or high (medium and low "
            "need review). Reports in other languages than Swedish and English always need review."
        ),
    )
    routing_table: dict[str, str] = Field(
        default_factory=dict,
        description="JSON {department id: queue name or address}; unmapped departments route to their id.",
    )
    text_storage: TextStorage = Field(
        "redacted", description="How the report text is stored in the audit log: redacted, hash or none."
    )
    retention_days: int | None = Field(
        None, ge=1, description="Stored texts older than this are removed by `kommunrouter audit purge`."
    )
    log_level: str = Field("INFO", description="Log level of the service's JSON logs.")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return Settings()


def settings_markdown_table() -> str:
    """The README's configuration table, generated from the Settings fields (a test keeps the README in sync)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        shown = "(none)" if default is None or default == {} else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `KOMMUNROUTER_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)
