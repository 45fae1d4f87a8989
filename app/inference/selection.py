"""Choosing the engine at start-up by measurement: every candidate runs the parity sample, those whose predictions
move away from the reference are rejected, and the fastest of the rest serves.

The reference is the artifact's parity sample (``parity.npz``: dev texts with the PyTorch fp32 logits, written by
export). An artifact exported before parity samples existed has none: then the built-in texts below run on
onnxruntime first, and its outputs are the reference the other engines are held to (the choice says so).

Start-up stays short: candidates run the likely fastest first, and a later candidate is stopped as soon as it can no
longer beat the best one that passed; once :data:`STARTUP_BUDGET_S` is spent, no further candidate is tried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.artifact import (
    CLASSIFICATION_TASKS,
    DEFAULT_MIN_AGREEMENT,
    PARITY_FILE,
    SPAN_TASK,
    TASKS,
    ArtifactError,
    Manifest,
    output_name,
)
from app.config import EngineSetting
from app.inference.engines import Engine, EngineCandidate
from app.inference.tensors import length_sorted_chunks

logger = logging.getLogger(__name__)

STARTUP_BUDGET_S = 5.0
# A candidate is tried only when the slowest load of its runtime so far, times this margin (loads vary on a busy
# machine), plus its run at the best rate so far, still fits in the budget.
LOAD_TIME_MARGIN = 1.5

# Report-like texts for artifacts without a parity sample: the lengths and mix (Swedish, English, numbers,
# addresses, å/ä/ö) of what the service sees. They only measure speed and agreement between engines.
BUILTIN_TEXTS = (
    "Gatlampan på Storgatan 12 är trasig sedan två veckor.",
    "Hål i vägen vid korsningen Kungsgatan/Drottninggatan, det är farligt för cyklister.",
    "Soptunnan har inte tömts på tre veckor och det luktar illa i hela trapphuset.",
    "Det läcker vatten från en brandpost utanför skolan på Ekvägen 4.",
    "Tack för den fina snöröjningen i morse, bussarna kom fram i tid!",
    "Grannen bygger ett garage utan bygglov, vem ska jag vända mig till?",
    "Min mamma får ingen hemtjänst trots att beslutet kom för en månad sedan. Vi är mycket oroliga.",
    "Råttor i källaren på Björkgatan 7, hyresvärden gör ingenting.",
    "Varför har simhallen stängt på söndagar? Barnen har ingenstans att träna.",
    "Parkeringsautomaten vid stationen tar inte kort.",
    "Fakturan för vatten och avlopp är dubbelt så hög som förra året, kan ni förklara?",
    "Förskolan Solrosen har inga platser kvar i höst, vad gör vi nu?",
    "Buller från byggarbetsplatsen på natten, klockan 02 i flera nätter.",
    "Skylten om hastighetsbegränsning vid Lillskogen har blåst omkull.",
    "The street light outside number 5 on Parkvägen has been broken since last week.",
    "Biblioteket borde ha längre öppettider på kvällarna.",
    "Översvämning i tunneln under järnvägen efter regnet, bilar har fastnat.",
    "Klotter på lekplatsens rutschkana i Stadsparken.",
    "Jag vill begära ut handlingar om detaljplanen för kvarteret Lärkan.",
    "Avloppet i köket är stopp och det bubblar i golvbrunnen.",
    "Mögel i badrummet i min lägenhet, hyresvärden svarar inte.",
    "Återvinningsstationen på Torget är full, kartong överallt på marken.",
    "Skolskjutsen kom inte i morse och min son stod och väntade i kylan i en timme.",
    "Tack till personalen på äldreboendet Solgården för det fina bemötandet!",
    "Cykelbanan längs Ån är full av grus och glas.",
    "Please send someone to clean up the litter in the park near the lake.",
    "Hej! Bänken vid busshållplatsen är sönder. Mvh Anna",
    "Ingen har plogat vår gata på hela vintern och de äldre kan inte ta sig ut, det här är inte acceptabelt.",
    "Rökning vid entrén till vårdcentralen trots förbud.",
    "Trafikljuset vid Storgatan–Järnvägsgatan visar grönt åt båda hållen!",
    "Kommunens e-tjänst för bygglov fungerar inte i mobilen.",
    "Vattnet är brunt och smakar konstigt sedan i går kväll i hela området kring Norra Ängen.",
)


@dataclass(frozen=True)
class ParitySample:
    """Texts, their padded inputs and, when the artifact has them, the reference outputs they must reproduce."""

    texts: list[str]
    input_ids: np.ndarray
    attention_mask: np.ndarray
    reference: dict[str, np.ndarray] | None
    reference_name: str
    min_agreement: dict[str, float]

    @property
    def size(self) -> int:
        return len(self.input_ids)


def read_parity_sample(artifact_dir: Path, manifest: Manifest) -> ParitySample | None:
    """The artifact's parity sample (its checksum was verified with the manifest), or None when it has none."""
    if manifest.parity is None:
        return None
    try:
        with np.load(artifact_dir / PARITY_FILE, allow_pickle=False) as arrays:
            texts = [str(text) for text in arrays["texts"]]
            input_ids = arrays["input_ids"].astype(np.int64)
            attention_mask = arrays["attention_mask"].astype(np.int64)
            reference = {output_name(task): arrays[output_name(task)] for task in TASKS}
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(artifact_dir, [f"{PARITY_FILE} cannot be read: {exc}"]) from exc
    if len(input_ids) != manifest.parity.texts or any(len(values) != len(input_ids) for values in reference.values()):
        raise ArtifactError(artifact_dir, [f"{PARITY_FILE} does not hold {manifest.parity.texts} texts"])
    return ParitySample(
        texts=texts,
        input_ids=input_ids,
        attention_mask=attention_mask,
        reference=reference,
        reference_name=f"{manifest.parity.reference} on the artifact's parity sample ({manifest.parity.texts} texts)",
        min_agreement=dict(manifest.parity.min_agreement),
    )


def builtin_parity_sample(texts: Sequence[str], input_ids: np.ndarray, attention_mask: np.ndarray) -> ParitySample:
    """Texts (:data:`BUILTIN_TEXTS`) tokenised by the caller; the reference is computed by the first engine."""
    return ParitySample(
        texts=list(texts),
        input_ids=input_ids,
        attention_mask=attention_mask,
        reference=None,
        reference_name=(
            f"onnxruntime on {len(input_ids)} built-in texts (the artifact has no parity sample: "
            "re-export it to compare with PyTorch fp32)"
        ),
        min_agreement=dict(DEFAULT_MIN_AGREEMENT),
    )


def agreement(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Per task, the share of predictions (keywords: of the real tokens' tags) equal to the reference's."""
    shares = {
        task: float(np.mean(outputs[output_name(task)].argmax(-1) == reference[output_name(task)].argmax(-1)))
        for task in CLASSIFICATION_TASKS
    }
    name = output_name(SPAN_TASK)
    width = mask.shape[1]
    same = outputs[name][:, :width].argmax(-1) == reference[name][:, :width].argmax(-1)
    shares[SPAN_TASK] = float(same[mask.astype(bool)].mean())
    return shares


@dataclass
class _Run:
    outputs: dict[str, np.ndarray]
    seconds: float


def run_sample(engine: Engine, sample: ParitySample, *, give_up_after_s: float | None = None) -> _Run | None:
    """The sample through an engine in its own batch sizes (after one warm-up call), timed; None when it ran
    longer than ``give_up_after_s``."""
    lengths = sample.attention_mask.sum(axis=1)
    chunks = [np.array(chunk) for chunk in length_sorted_chunks(lengths.tolist(), engine.max_batch_tokens)]

    def call(rows: np.ndarray) -> dict[str, np.ndarray]:
        width = int(lengths[rows].max())
        return engine.run(sample.input_ids[rows, :width], sample.attention_mask[rows, :width])

    call(chunks[0])  # first-call allocations and lazy compilation are not the engine's rate
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    started = time.perf_counter()
    for rows in chunks:
        parts.append((rows, call(rows)))
        if give_up_after_s is not None and time.perf_counter() - started > give_up_after_s:
            return None
    seconds = time.perf_counter() - started
    outputs: dict[str, np.ndarray] = {}
    for rows, values in parts:
        for name, value in values.items():
            if name not in outputs:
                shape = (sample.size, sample.input_ids.shape[1], *value.shape[2:]) if value.ndim == 3 else None
                outputs[name] = np.zeros(shape or (sample.size, *value.shape[1:]), dtype=np.float32)
            if value.ndim == 3:
                outputs[name][rows, : value.shape[1]] = value
            else:
                outputs[name][rows] = value
    return _Run(outputs, seconds)


@dataclass(frozen=True)
class EngineMeasurement:
    """What start-up measured of one candidate."""

    engine: str
    passed: bool
    texts_per_s: float | None = None
    agreement: dict[str, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class EngineChoice:
    """The engine that serves, why, and what every candidate measured."""

    engine: Engine
    setting: EngineSetting
    reference: str
    measurements: tuple[EngineMeasurement, ...]
    startup_s: float
    passed: bool

    @property
    def chosen(self) -> EngineMeasurement:
        return next(m for m in reversed(self.measurements) if m.engine == self.engine.name)


@dataclass
class _Selection:
    """The state of one start-up choice."""

    sample: ParitySample
    started: float = field(default_factory=time.perf_counter)
    reference: dict[str, np.ndarray] | None = None
    best: tuple[Engine, EngineMeasurement] | None = None
    measurements: list[EngineMeasurement] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def measure(self, engine: Engine, budget_s: float) -> EngineMeasurement:
        """Run the sample on a loaded engine; keep it when it passes and is the fastest so far. Once one has
        passed, a later one stops when it can no longer beat it or when the budget is spent."""
        give_up = None
        if self.best is not None and self.best[1].texts_per_s:
            give_up = min(self.sample.size / self.best[1].texts_per_s, max(budget_s - self.elapsed(), 0.0))
        run = run_sample(engine, self.sample, give_up_after_s=give_up)
        if run is None:
            assert self.best is not None
            return EngineMeasurement(
                engine.name, False, note=f"stopped: not faster than {self.best[0].name} within the start-up budget"
            )
        if self.reference is None:
            self.reference = run.outputs
        rate = self.sample.size / run.seconds
        shares = agreement(run.outputs, self.reference, self.sample.attention_mask)
        failures = [
            f"{task} agreement {shares[task]:.1%} < {self.sample.min_agreement[task]:.1%}"
            for task in TASKS
            if shares[task] < self.sample.min_agreement.get(task, DEFAULT_MIN_AGREEMENT[task])
        ]
        measurement = EngineMeasurement(engine.name, not failures, rate, shares, "; ".join(failures))
        if measurement.passed and (self.best is None or rate > (self.best[1].texts_per_s or 0.0)):
            self.best = (engine, measurement)
        return measurement


def choose_engine(
    candidates: Sequence[EngineCandidate],
    sample: ParitySample,
    *,
    setting: EngineSetting,
    check: Callable[[Engine], None],
    budget_s: float = STARTUP_BUDGET_S,
) -> EngineChoice:
    """The fastest candidate that reproduces the sample's reference; the last candidate (onnxruntime for ``auto``)
    when none does, with a warning. ``check`` verifies each loaded engine's graph (raises ArtifactError)."""
    selection = _Selection(sample, reference=sample.reference)
    order = list(candidates)
    if sample.reference is None:
        # Without a parity sample, onnxruntime (the engine export checked) computes the reference: it runs first.
        order.sort(key=lambda candidate: candidate.runtime != "onnxruntime")
    fallback = candidates[-1]
    fallback_engine: Engine | None = None
    load_seconds: dict[str, float] = {}  # the slowest load so far per runtime: what the next one will likely take
    for candidate in order:
        expected_end = selection.elapsed() + LOAD_TIME_MARGIN * load_seconds.get(candidate.runtime, 0.0)
        if selection.best is not None and selection.best[1].texts_per_s:
            expected_end += sample.size / selection.best[1].texts_per_s  # its run, at the best rate so far
        if selection.best is not None and expected_end >= budget_s:
            selection.measurements.append(
                EngineMeasurement(candidate.name, False, note=f"not tried: start-up budget of {budget_s:g} s spent")
            )
            continue
        loading = time.perf_counter()
        try:
            engine = candidate.load()
        except ArtifactError as exc:
            if candidate is fallback:
                raise
            logger.warning("engine %s is not used: %s", candidate.name, exc)
            selection.measurements.append(EngineMeasurement(candidate.name, False, note="; ".join(exc.problems)))
            continue
        load_seconds[candidate.runtime] = max(load_seconds.get(candidate.runtime, 0.0), time.perf_counter() - loading)
        check(engine)
        if candidate is fallback:
            fallback_engine = engine
        measurement = selection.measure(engine, budget_s)
        selection.measurements.append(measurement)
        logger.info(
            "engine %s: %s texts/s, agreement %s%s",
            candidate.name,
            "-" if measurement.texts_per_s is None else f"{measurement.texts_per_s:.1f}",
            measurement.agreement,
            f" (rejected: {measurement.note})" if measurement.note else "",
        )
    if selection.best is not None:
        engine, passed = selection.best[0], True
    else:
        # Candidates are skipped only once one has passed, so the fallback was loaded (or its failure raised).
        assert fallback_engine is not None
        engine, passed = fallback_engine, False
        logger.warning(
            "no engine reproduced the reference (%s); serving %s, the last resort of engine %s",
            sample.reference_name,
            engine.name,
            setting,
        )
    return EngineChoice(
        engine=engine,
        setting=setting,
        reference=sample.reference_name,
        measurements=tuple(selection.measurements),
        startup_s=selection.elapsed(),
        passed=passed,
    )
