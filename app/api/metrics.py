"""Prometheus metrics of one app, on a registry of its own (tests build many apps in one process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.audit.repository import department_agreement
from app.audit.writer import BatchOutcome
from app.inference.selection import EngineChoice

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kommunrouter_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "kommunrouter_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status code.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_batch_size = Histogram(
            "kommunrouter_model_batch_size",
            "Texts per model call (its count is the number of model calls).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "kommunrouter_model_inference_seconds",
            "Time of one model call (the engine's run).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "kommunrouter_audit_write_failures",
            "Decisions refused because the audit log could not record them.",
            registry=self.registry,
        )
        self.audit_batch_size = Histogram(
            "kommunrouter_audit_batch_size",
            "Decisions committed per audit transaction (grows under load: writes are batched).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.audit_commit_seconds = Histogram(
            "kommunrouter_audit_commit_seconds",
            "Time of one audit transaction.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "kommunrouter_predictions",
            "Decisions answered, by predicted department.",
            ["department"],
            registry=self.registry,
        )

    def record_engine_choice(self, choice: EngineChoice) -> None:
        """Export the engine chosen at start-up: which (an info gauge of 1), its measured rate and agreement."""
        chosen = choice.chosen
        labels = {"engine": choice.engine.name, "setting": choice.setting, "device": choice.engine.device}
        Gauge(
            "kommunrouter_engine_info",
            "The engine that runs the model (1), chosen at start-up by the setting KOMMUNROUTER_ENGINE.",
            list(labels),
            registry=self.registry,
        ).labels(**labels).set(1)
        Gauge(
            "kommunrouter_engine_texts_per_second",
            "Texts per second the chosen engine ran on the parity sample at start-up.",
            registry=self.registry,
        ).set(chosen.texts_per_s or 0.0)
        agreement = Gauge(
            "kommunrouter_engine_agreement_ratio",
            "Share of the parity sample on which the chosen engine agreed with the reference, by task.",
            ["task"],
            registry=self.registry,
        )
        for task, share in (chosen.agreement or {}).items():
            agreement.labels(task=task).set(share)
        Gauge(
            "kommunrouter_engine_startup_seconds",
            "Seconds start-up spent measuring engines and choosing one.",
            registry=self.registry,
        ).set(choice.startup_s)

    def observe_model_call(self, batch_size: int, seconds: float) -> None:
        """Record one model call (called from the inference thread)."""
        self.model_batch_size.observe(batch_size)
        self.model_seconds.observe(seconds)

    def decision_answered(self, department: str) -> None:
        """Count a decision that was recorded and answered."""
        self.predictions.labels(department=department).inc()

    def audit_write_failed(self) -> None:
        """Count a decision refused because the audit log could not record it."""
        self.audit_write_failures.inc()

    def model_calls(self) -> int:
        """How many model calls this app has made."""
        return int(self.registry.get_sample_value("kommunrouter_model_batch_size_count") or 0)

    def observe_audit_batch(self, outcome: BatchOutcome) -> None:
        """Record one audit transaction (called by the audit writer)."""
        self.audit_batch_size.observe(outcome.size)
        self.audit_commit_seconds.observe(outcome.seconds)

    def watch_feedback_agreement(self, engine: Engine) -> None:
        """Export the reviewers' agreement with the model, read from the audit database at each scrape."""
        self.registry.register(FeedbackAgreementCollector(engine))

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        return generate_latest(self.registry)


class FeedbackAgreementCollector(Collector):
    """Per department the model chose: how many decisions reviewers judged, and the share they agreed with.

    Read from the audit database when scraped, so every replica of the service reports the same numbers.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "kommunrouter_feedback_agreement_ratio",
                "Share of reviewed decisions whose department the reviewer kept, by the model's department.",
                labels=["department"],
            ),
            GaugeMetricFamily(
                "kommunrouter_feedback_reviewed_decisions",
                "Decisions whose department a reviewer judged, by the model's department.",
                labels=["department"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        ratio, reviewed = self._families()
        try:
            with Session(self._engine) as session:
                agreement = department_agreement(session)
        except SQLAlchemyError as exc:
            # /metrics must keep answering when the database is down (that is when it matters most).
            logger.warning("feedback agreement not exported: %s", exc.__class__.__name__)
            return
        for department, (judged, agreed) in sorted(agreement.items()):
            ratio.add_metric([department], agreed / judged)
            reviewed.add_metric([department], judged)
        yield ratio
        yield reviewed
