"""``GET /v1/model`` and ``GET /v1/labels``: what the served model is and what it predicts."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.api.deps import ClassifierDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import (
    DepartmentLabel,
    EngineCandidateInfo,
    EngineInfo,
    LabelInfo,
    LabelsResponse,
    ModelInfo,
    SeverityLabel,
)
from app.api.security import ClassifyClient
from app.artifact import SPAN_TASK, TASKS
from app.inference.model import ReportModel

router = APIRouter(prefix="/v1", tags=["model"])


def engine_info(model: ReportModel) -> EngineInfo | None:
    """The start-up choice of engine as the API shows it."""
    choice = model.engine_choice
    if choice is None:
        return None
    chosen = choice.chosen
    return EngineInfo(
        engine=choice.engine.name,
        setting=choice.setting,
        device=choice.engine.device,
        texts_per_s=chosen.texts_per_s,
        department_agreement=(chosen.agreement or {}).get("department"),
        passed=choice.passed,
        reference=choice.reference,
        startup_s=choice.startup_s,
        max_batch_tokens=model.max_batch_tokens,
        candidates=[EngineCandidateInfo(**asdict(measurement)) for measurement in choice.measurements],
    )


@router.get("/model", responses=ERROR_RESPONSES, summary="The served model")
async def model_info(_client: ClassifyClient, classifier: ClassifierDep) -> ModelInfo:
    """A summary of the served model's manifest (version, labels, metrics, provenance, checksums) and its engine."""
    manifest = classifier.manifest
    return ModelInfo(
        model_version=manifest.model_version,
        created_at=manifest.created_at,
        execution_provider=classifier.model.provider,
        engine=engine_info(classifier.model),
        quantization=manifest.quantization,
        max_length=manifest.tokenizer.max_length,
        review_threshold=classifier.review_threshold,
        reviews_by_band=classifier.reviews_by_band,
        auto_route_band=classifier.auto_route_band,
        confidence_bands=None if manifest.confidence_bands is None else manifest.confidence_bands.model_dump(),
        labels={task: manifest.tasks[task].label_ids for task in TASKS},
        metrics=manifest.metrics,
        provenance=manifest.provenance,
        files=manifest.files,
    )


@router.get("/labels", responses=ERROR_RESPONSES, summary="The taxonomy")
async def labels(_client: ClassifyClient, classifier: ClassifierDep) -> LabelsResponse:
    """Every label the model predicts, with its Swedish name, what it covers and (departments) its destination."""
    tasks = classifier.manifest.tasks
    return LabelsResponse(
        department=[
            DepartmentLabel(
                label=label.id, name=label.name, description=label.description, routed_to=classifier.route(label.id)
            )
            for label in tasks["department"].labels
        ],
        sentiment=[
            LabelInfo(label=label.id, name=label.name, description=label.description)
            for label in tasks["sentiment"].labels
        ],
        severity=[
            SeverityLabel(label=label.id, name=label.name, description=label.description, level=level)
            for level, label in enumerate(tasks["severity"].labels, start=1)
        ],
        keywords=[
            LabelInfo(label=label.id, name=label.name, description=label.description)
            for label in tasks[SPAN_TASK].labels
        ],
    )
