"""From a report text to a routing decision: validation, batched model call, language, routing and review flag."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.artifact import ConfidenceBand, Manifest
from app.config import AutoRouteBand, Settings
from app.errors import ConfigurationError
from app.inference.batcher import MicroBatcher
from app.inference.language import Language, detect_language
from app.inference.model import ModelCallObserver, ModelPrediction, ReportModel
from app.inference.text import check_report_text

REVIEWED_LANGUAGES = ("sv", "en")


@dataclass(frozen=True)
class Classification:
    """The model's prediction for a report and what the service decides from it."""

    prediction: ModelPrediction
    language: Language
    routed_to: str
    needs_review: bool
    confidence_band: ConfidenceBand | None  # None where the artifact has no bands


class Classifier:
    """The service's one model, behind a micro-batcher, with the municipality's routing table."""

    def __init__(
        self,
        model: ReportModel,
        *,
        routing_table: Mapping[str, str],
        review_threshold: float | None,
        auto_route_band: AutoRouteBand = "medium",
        max_text_chars: int,
        max_batch_size: int,
        max_batch_wait_ms: float,
    ) -> None:
        departments = model.manifest.tasks["department"].label_ids
        unknown = sorted(set(routing_table) - set(departments))
        if unknown:
            raise ConfigurationError(
                f"the routing table names departments the model does not know: {', '.join(unknown)} "
                f"(the model's departments: {', '.join(departments)})"
            )
        self.model = model
        self.routing_table = dict(routing_table)
        bands = model.manifest.confidence_bands
        # An explicit threshold wins; else the bands decide; an artifact without bands brings its own threshold.
        self.reviews_by_band = review_threshold is None and bands is not None
        self.auto_route_band: AutoRouteBand = auto_route_band
        self.review_threshold: float | None
        if review_threshold is not None:
            self.review_threshold = review_threshold
        elif bands is not None:
            self.review_threshold = bands.lowest_score(auto_route_band)
        else:
            self.review_threshold = model.manifest.routing_threshold
        self._max_text_chars = max_text_chars
        self._batcher: MicroBatcher[str, ModelPrediction] = MicroBatcher(
            model.predict, max_batch_size=max_batch_size, max_wait_s=max_batch_wait_ms / 1000
        )

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def running(self) -> bool:
        return self._batcher.running

    def start(self) -> None:
        """Start the micro-batcher (from the serving event loop)."""
        self._batcher.start()

    async def close(self) -> None:
        """Finish every queued request, then stop."""
        await self._batcher.close()

    def route(self, department: str) -> str:
        """The queue or address of a department; departments missing from the table route to their id."""
        return self.routing_table.get(department, department)

    async def classify(self, text: str) -> Classification:
        """Classify one report text as sent (raises :class:`~app.errors.InvalidInput` for unusable text)."""
        check_report_text(text, max_chars=self._max_text_chars)
        return self.decide(text, await self._batcher.submit(text))

    def classify_many(self, texts: Sequence[str]) -> list[Classification]:
        """Classify checked texts in this thread, in one length-sorted pass of the model (bulk, no batcher)."""
        return [
            self.decide(text, prediction) for text, prediction in zip(texts, self.model.predict(texts), strict=True)
        ]

    def decide(self, text: str, prediction: ModelPrediction) -> Classification:
        """The service's decision on a prediction: language, destination and whether a person must review it."""
        language = detect_language(text)
        department = prediction.department[0]
        bands = self.manifest.confidence_bands
        return Classification(
            prediction=prediction,
            language=language,
            routed_to=self.route(department.label),
            needs_review=self.needs_review(department.score) or language not in REVIEWED_LANGUAGES,
            confidence_band=None if bands is None else bands.band(department.score),
        )

    def needs_review(self, department_score: float) -> bool:
        """Whether a department score is too uncertain to route without a person: below the review threshold in
        effect (the lowest score of the auto-routed band when review follows the bands; none is when that band is
        empty on dev)."""
        return self.review_threshold is None or department_score < self.review_threshold


def load_classifier(settings: Settings, *, on_model_call: ModelCallObserver | None = None) -> Classifier:
    """The model artifact of ``settings`` loaded into a classifier, as the service and ``classify`` both run it:
    on the engine chosen at start-up (KOMMUNROUTER_ENGINE)."""
    model = ReportModel.load(
        settings.model_dir,
        engine=settings.engine,
        execution_provider=settings.execution_provider,
        intra_op_threads=settings.intra_op_threads,
        max_batch_tokens=settings.max_batch_tokens,
        on_model_call=on_model_call,
    )
    return Classifier(
        model,
        routing_table=settings.routing_table,
        review_threshold=settings.review_threshold,
        auto_route_band=settings.auto_route_band,
        max_text_chars=settings.max_text_chars,
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
    )
