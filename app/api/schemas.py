"""Request and response bodies of the HTTP API (separate from the audit ORM models), with Swedish examples."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler, JsonValue
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.inference.text import TYPED_TEXT_PATTERN, forbidden_character, report_text_pattern

EXAMPLE_TEXT = (
    "Gatlampan utanför Storgatan 12 har varit trasig i två veckor och det är helt mörkt på kvällarna. "
    "Barnen går förbi där till skolan."
)


# --- errors -------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable code and a message for people."""

    code: str = Field(description="Stable error code, e.g. empty_text, text_too_long, invalid_json, unauthorized.")
    message: str = Field(description="What was wrong and how to fix it.")
    details: list[dict[str, Any]] | None = Field(
        None, description="Per-field findings of a validation error (location, message, type)."
    )


class ErrorResponse(BaseModel):
    """The one shape of every error answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "empty_text", "message": "the text is empty or only whitespace"}}]
        }
    )

    error: ErrorDetail


# --- requests -----------------------------------------------------------------------------------------------


def _typed_text(value: str) -> str:
    problem = forbidden_character(value)
    if problem is not None:
        raise ValueError(f"contains a control character or a lone surrogate ({problem})")
    return value


# Limits of the request metadata (the audit log stores it): declared in the schema, enforced the same way.
METADATA_MAX_DEPTH = 4  # the metadata object itself is level 1
METADATA_MAX_KEYS = 32  # per object
METADATA_MAX_ITEMS = 32  # per array
METADATA_MAX_KEY_CHARS = 100
METADATA_MAX_STRING_CHARS = 1000


def _check_metadata(value: JsonValue, *, depth: int = 1) -> None:
    """Raise ValueError naming the first limit ``value`` breaks (see the METADATA_* limits)."""
    if isinstance(value, str):
        _typed_text(value)
        if len(value) > METADATA_MAX_STRING_CHARS:
            raise ValueError(f"a string is longer than {METADATA_MAX_STRING_CHARS} characters ({len(value)})")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    elif isinstance(value, list | dict):
        if depth > METADATA_MAX_DEPTH:
            raise ValueError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels")
        if isinstance(value, list):
            if len(value) > METADATA_MAX_ITEMS:
                raise ValueError(f"an array has more than {METADATA_MAX_ITEMS} items ({len(value)})")
            for item in value:
                _check_metadata(item, depth=depth + 1)
            return
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"an object has more than {METADATA_MAX_KEYS} keys ({len(value)})")
        for key, item in value.items():
            _typed_text(key)
            if len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(f"a key is longer than {METADATA_MAX_KEY_CHARS} characters ({len(key)})")
            _check_metadata(item, depth=depth + 1)


def _storable_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    _check_metadata(value)
    return value


def _metadata_values(depth: int) -> list[dict[str, Any]]:
    """The JSON schemas a metadata value at ``depth`` may have (the limits of :func:`_check_metadata`)."""
    values: list[dict[str, Any]] = [
        {"type": "string", "maxLength": METADATA_MAX_STRING_CHARS, "pattern": TYPED_TEXT_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if depth <= METADATA_MAX_DEPTH:
        inner = {"anyOf": _metadata_values(depth + 1)}
        values += [
            {
                "type": "object",
                "maxProperties": METADATA_MAX_KEYS,
                "propertyNames": {"maxLength": METADATA_MAX_KEY_CHARS, "pattern": TYPED_TEXT_PATTERN},
                "additionalProperties": inner,
            },
            {"type": "array", "maxItems": METADATA_MAX_ITEMS, "items": inner},
        ]
    return values


def _metadata_schema() -> dict[str, Any]:
    """The metadata object (level 1), unrolled to the depth limit."""
    return next(value for value in _metadata_values(1) if value["type"] == "object")


class _JsonSchema:
    """Replace the generated JSON schema of an annotated type by a fixed one (the validation stays as it is)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    def __get_pydantic_json_schema__(self, _schema: CoreSchema, _handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return dict(self.schema)


CaseId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="The caller's own id of the case (stored with the decision).",
        examples=["KS-2024-00412"],
        json_schema_extra={"pattern": TYPED_TEXT_PATTERN},
    ),
    AfterValidator(_typed_text),
]
ReportText = Annotated[
    str,
    Field(
        description=(
            "The report as the citizen wrote it: 1 to 10,000 characters by default (KOMMUNROUTER_MAX_TEXT_CHARS), "
            "not only whitespace or invisible format characters (zero-width space, direction marks), no control "
            "characters other than tab and line breaks."
        ),
        examples=[EXAMPLE_TEXT],
        # Checked by the classifier (codes empty_text, text_too_long, invalid_text); maxLength is set from the
        # settings when the OpenAPI document is built.
        json_schema_extra=lambda schema: schema.update(minLength=1, pattern=report_text_pattern()),
    ),
]


class ReportItem(BaseModel):
    """One report to classify."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "Soptunnan på Björkvägen 3 har inte tömts på två veckor.", "case_id": "KS-2024-00413"}
            ]
        },
    )

    text: ReportText
    case_id: CaseId | None = None


class ClassifyRequest(ReportItem):
    """A report to classify, with optional metadata that is stored with the decision."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": EXAMPLE_TEXT,
                    "case_id": "KS-2024-00412",
                    "metadata": {"kanal": "e-tjänst", "förvaltning": "samhällsbyggnad"},
                }
            ]
        }
    )

    metadata: (
        Annotated[dict[str, JsonValue], AfterValidator(_storable_metadata), _JsonSchema(_metadata_schema())] | None
    ) = Field(
        None,
        description=(
            f"Free JSON object stored with the decision (personal data in its keys and strings is redacted in the "
            f"audit log). Limits: {METADATA_MAX_DEPTH} levels of nesting, {METADATA_MAX_KEYS} keys per object, "
            f"{METADATA_MAX_ITEMS} items per array, keys of {METADATA_MAX_KEY_CHARS} and strings of "
            f"{METADATA_MAX_STRING_CHARS} characters; no control characters."
        ),
    )


class _DocumentedAs:
    """Parse anything, document as ``model``: a bad batch item becomes an error in its own slot of the answer
    instead of failing the whole request, while the schema still tells clients what an item should be."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_json_schema__(self, _schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {
            "anyOf": [
                handler(self.model.__pydantic_core_schema__),
                {"description": "Anything else: answered with a validation_error in its place of the results."},
            ]
        }


class BatchRequest(BaseModel):
    """Several reports at once."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "text": "Det är ett stort hål i asfalten på Kungsgatan vid busshållplatsen.",
                            "case_id": "A-1",
                        },
                        {"text": "Tack för att ni snöröjde cykelbanan så snabbt i morse!"},
                    ]
                }
            ]
        },
    )

    items: list[Annotated[Any, _DocumentedAs(ReportItem)]] = Field(
        description="The reports, at most KOMMUNROUTER_MAX_BATCH_ITEMS (64 by default). An item that is not a "
        "valid report gets an error in its place of the results (the others are classified): per-item errors are "
        "the design, so any item is accepted here."
    )


# --- classification results ---------------------------------------------------------------------------------


class ScoredLabel(BaseModel):
    label: str = Field(description="Stable label id.", examples=["gata_park"])
    name: str = Field(description="Swedish display name.", examples=["Gata och park"])
    score: float = Field(ge=0, le=1, description="Calibrated probability.")


class DepartmentResult(ScoredLabel):
    confidence_band: Literal["high", "medium", "low"] | None = Field(
        description="The score's confidence band: high and medium were chosen on dev when the model was exported "
        "to route at >= 97% and >= 90% department precision (GET /v1/model has the thresholds and their test "
        "precision); null when the model has no bands."
    )
    alternatives: list[ScoredLabel] = Field(
        description="The next most likely departments (up to three), most likely first."
    )


class SentimentResult(BaseModel):
    label: str = Field(examples=["negativ"])
    score: float = Field(ge=0, le=1)


class SeverityResult(BaseModel):
    label: str = Field(examples=["medel"])
    level: int = Field(ge=1, description="Ordinal level: 1 lag, 2 medel, 3 hog, 4 akut (the taxonomy's order).")
    score: float = Field(ge=0, le=1, description="Probability of this level (the most probable one).")


class KeywordResult(BaseModel):
    text: str = Field(examples=["Storgatan 12"])
    type: str = Field(examples=["PLATS"])
    start: int = Field(ge=0, description="Character offset into the text exactly as sent.")
    end: int = Field(ge=0, description="End character offset (exclusive) into the text as sent.")
    score: float = Field(ge=0, le=1)


class ClassifyResponse(BaseModel):
    """The routing decision for one report."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f0c52-3f0d-4f4e-9a53-8f1f7c2d9a10",
                    "department": {
                        "label": "gata_park",
                        "name": "Gata och park",
                        "score": 0.91,
                        "confidence_band": "medium",
                        "alternatives": [
                            {"label": "trafik_parkering", "name": "Trafik och parkering", "score": 0.05},
                            {"label": "kommun_ovrigt", "name": "Kommunledning och övrigt", "score": 0.02},
                            {"label": "skola", "name": "Förskola och skola", "score": 0.01},
                        ],
                    },
                    "routed_to": "gatuenheten@kommun.se",
                    "needs_review": False,
                    "sentiment": {"label": "negativ", "score": 0.83},
                    "severity": {"label": "medel", "level": 2, "score": 0.64},
                    "keywords": [
                        {"text": "Gatlampan", "type": "OBJEKT", "start": 0, "end": 9, "score": 0.88},
                        {"text": "Storgatan 12", "type": "PLATS", "start": 18, "end": 30, "score": 0.93},
                    ],
                    "language": "sv",
                    "model_version": "2024.06.1",
                    "latency_ms": 21.4,
                }
            ]
        },
    )

    request_id: str = Field(description="Id of this decision in the logs and the audit log.")
    department: DepartmentResult
    routed_to: str = Field(description="The municipality's queue or address for the department (routing table).")
    needs_review: bool = Field(
        description="True when the department's confidence band is below the band routed automatically "
        "(KOMMUNROUTER_AUTO_ROUTE_BAND; with KOMMUNROUTER_REVIEW_THRESHOLD set, or a model without bands: when the "
        "score is below the review threshold), or when the language is neither Swedish nor English."
    )
    sentiment: SentimentResult
    severity: SeverityResult
    keywords: list[KeywordResult]
    language: Literal["sv", "en", "other"]
    model_version: str
    latency_ms: float = Field(ge=0, description="Time the service took to classify the report.")


class BatchResponse(BaseModel):
    """One result per item, in the order of the items: a decision, or an error for a bad item."""

    results: list[ClassifyResponse | ErrorResponse]


# --- model, labels and probes -------------------------------------------------------------------------------


class EngineCandidateInfo(BaseModel):
    """What start-up measured of one engine on the parity sample."""

    engine: str = Field(description="onnxruntime-cpu, onnxruntime-cuda, openvino-bf16 or openvino-f32.")
    passed: bool = Field(description="Whether its predictions agreed with the reference within the tolerances.")
    texts_per_s: float | None = Field(description="Texts per second on the parity sample (None: not measured).")
    agreement: dict[str, float] | None = Field(description="Share of predictions equal to the reference's, by task.")
    note: str = Field(description="Why it was rejected or not tried (empty when it passed).")


class EngineInfo(BaseModel):
    """The engine that runs the model, chosen at start-up by measurement."""

    engine: str = Field(description="The engine that serves.")
    setting: str = Field(description="KOMMUNROUTER_ENGINE: auto, onnxruntime or openvino.")
    device: str = Field(description="Where the graph runs (execution provider, or OpenVINO device and precision).")
    texts_per_s: float | None = Field(description="Its rate on the parity sample at start-up.")
    department_agreement: float | None = Field(description="Its department agreement with the reference.")
    passed: bool = Field(description="False when no engine reproduced the reference and the last resort serves.")
    reference: str = Field(description="What the agreement was measured against.")
    startup_s: float = Field(description="Seconds start-up spent choosing.")
    max_batch_tokens: int = Field(description="Padded tokens per model call.")
    candidates: list[EngineCandidateInfo] = Field(description="Every engine measured, in the order tried.")


class ModelInfo(BaseModel):
    """A summary of the served model's manifest."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    created_at: datetime
    execution_provider: str = Field(
        description="Where the model runs: onnxruntime's execution provider, or OpenVINO's device and precision."
    )
    engine: EngineInfo | None = Field(description="The engine chosen at start-up, and what every candidate measured.")
    quantization: str
    max_length: int = Field(description="Tokens per text; longer texts are truncated.")
    review_threshold: float | None = Field(
        description="Department score below which a decision needs review (null: every decision does, because the "
        "auto-routed confidence band is empty)."
    )
    reviews_by_band: bool = Field(description="Whether needs_review follows the confidence bands.")
    auto_route_band: Literal["high", "medium"] = Field(description="The lowest band routed without review.")
    confidence_bands: dict[str, Any] | None = Field(
        description="The bands' thresholds and target precisions, chosen on dev (null for models without bands)."
    )
    labels: dict[str, list[str]] = Field(description="Label ids of every task, in the model's output order.")
    metrics: dict[str, Any] = Field(description="Evaluation results recorded at training time.")
    provenance: dict[str, Any] = Field(description="Where the model came from (data, base model, training run).")
    files: dict[str, str] = Field(description="sha256 of every artifact file.")


class LabelInfo(BaseModel):
    label: str
    name: str
    description: str


class DepartmentLabel(LabelInfo):
    routed_to: str = Field(description="Where decisions for this department are routed.")


class SeverityLabel(LabelInfo):
    level: int = Field(ge=1)


class LabelsResponse(BaseModel):
    """The taxonomy the served model predicts."""

    department: list[DepartmentLabel]
    sentiment: list[LabelInfo]
    severity: list[SeverityLabel]
    keywords: list[LabelInfo] = Field(description="Keyword span types.")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadinessResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(
        description="Each readiness condition: model (loaded), database (answers), schema (at the Alembic head)."
    )
    code: Literal["model_not_loaded", "database_unavailable", "schema_outdated"] | None = Field(
        None, description="Why the service is not ready (absent when it is)."
    )
    message: str | None = Field(None, description="What is wrong, for people (absent when ready).")


# --- feedback and audit --------------------------------------------------------------------------------------

# ISO 8601 as RFC 3339 writes it (a space for the T, and no zone, allowed too): never a bare number, which
# pydantic would otherwise take for a Unix timestamp.
_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?")


def _iso_8601(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _ISO_8601.fullmatch(value) is None:
        raise ValueError("not an ISO 8601 date or time (for example 2024-03-15T08:30:00Z)")
    return value


def _as_utc(moment: datetime) -> datetime:
    """A query timestamp in UTC, the zone of the audit log (a timestamp without a zone is taken as UTC); one
    beyond the range of datetime in UTC is clamped to it (earlier or later than every decision either way)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == datetime.min.year else datetime.max).replace(tzinfo=UTC)


UtcTime = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_as_utc)]

LABEL_ID = r"^[A-Za-z0-9_]{1,64}$"
# Request ids are UUIDs the service made; anything printable is accepted, nothing a database cannot store.
REQUEST_ID = r"^[\x21-\x7e]{1,128}$"
ReviewedLabel = Annotated[str, Field(pattern=LABEL_ID)]
# The Idempotency-Key header of POST /v1/feedback (keyword arguments of fastapi.Header).
IDEMPOTENCY_KEY: dict[str, Any] = {
    "alias": "Idempotency-Key",
    "pattern": r"^[\x21-\x7e]{1,255}$",
    "description": "A key of the client's choosing (a UUID, say) that makes a retried POST safe: the same key with "
    "the same request returns the feedback stored the first time and stores nothing; with another request, 409.",
}


class KeywordLabel(BaseModel):
    """A keyword span as a reviewer labels it."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0, description="Character offset of the span.")
    end: int = Field(ge=1, description="End character offset (exclusive).")
    type: str = Field(pattern=LABEL_ID, examples=["PLATS"])


class FeedbackRequest(BaseModel):
    """A person's correction of a decision; fields left out are not judged."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f0c52-3f0d-4f4e-9a53-8f1f7c2d9a10",
                    "department": "trafik_parkering",
                    "severity": "hog",
                    "keywords": [{"start": 18, "end": 30, "type": "PLATS"}],
                    "reviewer": "handläggare 12",
                },
                {"request_id": "0b6f0c52-3f0d-4f4e-9a53-8f1f7c2d9a10", "reviewer": "handläggare 12"},
            ]
        },
    )

    request_id: str = Field(pattern=REQUEST_ID, description="The request id of the decision.")
    department: ReviewedLabel | None = Field(None, description="The right department (a label id).")
    sentiment: ReviewedLabel | None = Field(None, description="The right sentiment.")
    severity: ReviewedLabel | None = Field(None, description="The right severity.")
    keywords: list[KeywordLabel] | None = Field(
        None,
        max_length=200,
        description="All the right keyword spans, with offsets into the text as sent to /v1/classify (as its "
        "answer gave them); [] when the report has none. A feedback without any of department, sentiment, "
        "severity and keywords confirms the whole decision.",
    )
    reviewer: (
        Annotated[
            str,
            Field(min_length=1, max_length=256, json_schema_extra={"pattern": TYPED_TEXT_PATTERN}),
            AfterValidator(_typed_text),
        ]
        | None
    ) = Field(
        None,
        description="Who reviewed the decision: a staff id is best. Kept in the audit log, with any personnummer, "
        "phone number or e-mail address in it redacted.",
    )


class FeedbackResponse(BaseModel):
    """A stored correction; keyword offsets refer to the stored text of the decision (see AuditRecord.text)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    request_id: str
    created_at: datetime
    client: str = Field(description="The API client that sent the feedback.")
    reviewer: str | None
    department: str | None
    sentiment: str | None
    severity: str | None
    keywords: list[KeywordLabel] | None


class AuditKeyword(BaseModel):
    type: str
    start: int = Field(ge=0, description="Offset into the stored text (the text as sent where none is stored).")
    end: int = Field(ge=0)
    score: float = Field(ge=0, le=1)
    text: str | None = Field(description="The span of the stored text (null where no text is stored).")


class AuditRecord(BaseModel):
    """A routing decision from the audit log, with the feedback it received (oldest first)."""

    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    created_at: datetime
    client: str = Field(description="The API client that asked.")
    case_id: str | None = Field(description="The caller's case id (redacted like the text).")
    model_version: str
    artifact_sha256: str = Field(description="sha256 of the model file that decided.")
    department: str
    department_score: float
    sentiment: str
    sentiment_score: float
    severity: str
    severity_score: float
    keywords: list[AuditKeyword]
    needs_review: bool
    routed_to: str
    latency_ms: float
    text_storage: Literal["redacted", "hash", "none"] = Field(
        description="The text policy the decision was stored under."
    )
    text: str | None = Field(
        description="The text with personal data replaced ([PERSONNUMMER], [TELEFON], [E-POST], [NAMN])."
    )
    text_sha256: str | None = Field(description="sha256 of the text as sent (text_storage hash).")
    text_purged_at: datetime | None = Field(description="When retention removed the stored text.")
    metadata: dict[str, Any] | None
    feedback: list[FeedbackResponse]


class AuditPage(BaseModel):
    """One page of decisions, newest first, and how many match the filters in all."""

    items: list[AuditRecord]
    total: int = Field(ge=0, description="Decisions matching the filters, on all pages.")
    limit: int
    offset: int
