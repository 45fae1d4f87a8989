"""Service settings: every field is an environment variable with the prefix ``KOMMUNROUTER_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ExecutionProvider = Literal["cpu", "cuda"]
EngineSetting = Literal["auto", "onnxruntime", "openvino"]
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
            "API keys as JSON: {client name: 'sha256:<hex of the key>|scope,scope'}; "
            "scopes: classify, feedback, audit, review."
        ),
    )
    execution_provider: ExecutionProvider = Field(
        "cpu", description="onnxruntime execution provider: cpu, or cuda (falls back to cpu when absent)."
    )
    engine: EngineSetting = Field(
        "auto",
        description=(
            "What runs the model: auto (at start-up, every engine and precision this machine offers runs the "
            "artifact's parity sample; the fastest that agrees with the reference is kept), onnxruntime, or "
            "openvino (CPU; bf16 where the CPU has AMX/AVX-512-BF16). With execution provider cuda, auto is "
            "onnxruntime on CUDA."
        ),
    )
    intra_op_threads: int = Field(2, ge=1, description="Threads per inference call (onnxruntime and OpenVINO).")
    max_batch_size: int = Field(32, ge=1, description="Largest micro-batch sent to the model.")
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="How long the micro-batcher waits for more requests before running."
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Most padded tokens (texts x longest text) in one model call; a micro-batch beyond it is split, "
            "shortest texts together. Default: the engine's own (onnxruntime CPU 256, OpenVINO 1024, CUDA 8192; "
            "bench/results/engines.json)."
        ),
    )
    max_text_chars: int = Field(10_000, ge=1, description="Longest accepted report text, in characters.")
    max_batch_items: int = Field(64, ge=1, description="Most items accepted by /v1/classify/batch.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest accepted request body (413 above).")
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may take to arrive in full (408 after), so a stalled client holds no "
        "worker.",
    )
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
    ui_session_secret: SecretStr | None = Field(
        None,
        description=(
            "Key that signs the staff pages' session cookies (32+ random characters); unset, a random key per "
            "process (sign-ins end at a restart and are not shared between replicas)."
        ),
    )
    ui_session_hours: float = Field(8.0, gt=0, le=24 * 30, description="How long a sign-in to the staff pages lasts.")
    ui_timezone: str = Field(
        "Europe/Stockholm", description="Time zone of the days and weeks on the staff pages (an IANA zone name)."
    )


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
