"""What each training asset does, as plain functions of the use case, the warehouse and the
settings: the training set, a tuned candidate, its evaluation (the gate), and the champion move.
``assets.py`` only declares them to Dagster."""

import functools
import hashlib
import math
import subprocess
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.assets import read_features, staged_table
from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.ingestion.labels import labelled_days, read_labels
from ml_platform.metadata import markdown_table
from ml_platform.settings import REPO_ROOT, Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tasks import selection_metric, task_of
from ml_platform.training.compare import evidence
from ml_platform.training.dataset import LABEL, SPLIT, UNLABELLED, WINDOW, build_training_set
from ml_platform.training.gate import NOT_WORSE
from ml_platform.training.handoffs import Candidate, Champion, Evaluation, TrainingSetIdentity

if TYPE_CHECKING:
    import pandas as pd

GATE_PASSED_TAG = "gate.passed"
SPLITS = ("train", "validation", "test")
LIBRARIES = ("scikit-learn", "skops", "numpy", "pandas", "polars", "duckdb", "mlflow", "dagster")


def training_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.training_set"


def content_sha256(frame: pl.DataFrame) -> str:
    """A hash of the rows' values, independent of how the table is stored."""
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.to_pandas(), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


@functools.cache  # read once per process: the code location calls it for every use case
def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_split(warehouse: DuckDBResource, spec: UseCaseSpec, split: str) -> pl.DataFrame:
    with warehouse.get_connection() as conn:
        query = f"SELECT * FROM {training_table(spec)} WHERE {SPLIT} = ?"
        return conn.sql(f'{query} ORDER BY "{spec.entity}", {EVENT_TIMESTAMP}', params=[split]).pl()


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def _features(frame: pl.DataFrame, spec: UseCaseSpec) -> "pd.DataFrame":
    from ml_platform.training.evaluate import features_of

    return features_of(frame, spec)


def window_text(spec: UseCaseSpec) -> str:
    window = (
        f"Newest {spec.model.training_rows} rows"
        if spec.model.training_rows is not None
        else f"Last {spec.model.training_days} days"
    )
    if spec.model.min_entity_rows is not None:
        window += f", and at least {spec.model.min_entity_rows} rows of each entity"
    return window


@dataclass(frozen=True)
class RunInfo:
    """The Dagster run a candidate is trained in, recorded with it in MLflow."""

    run_id: str
    code_version: str


def write_training_set(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings
) -> dg.MaterializeResult:
    """The training window's rows with point-in-time features and labels, split by time."""
    with warehouse.get_connection() as conn:
        labels, days = read_labels(conn, spec), labelled_days(conn, spec)
        spine = conn.sql(f'SELECT "{spec.entity}", "{spec.timestamp}" FROM {staged_table(spec)}').pl()
    # Anomaly windows before any labels landed: every row counts as normal (unsupervised).
    frame = build_training_set(spine, read_features(warehouse, spec), labels, spec, days or None)
    if frame.filter(pl.col(SPLIT) != UNLABELLED).is_empty():
        raise dg.Failure(
            description=(
                f"{spec.name}: no row of the training window has a label yet; land labels in "
                f"{settings.labels_dir_for(spec.name)} or POST them to /v1/labels/{spec.name} "
                f"(columns {', '.join(spec.label_columns)})"
            ),
            allow_retries=False,
        )
    with warehouse.get_connection() as conn:
        conn.register("training_rows", frame.to_arrow())
        conn.sql(f"CREATE OR REPLACE TABLE {training_table(spec)} AS SELECT * FROM training_rows")
        conn.unregister("training_rows")
    label_name, label_statistic = task_of(spec).label_statistic(pl.col(LABEL))
    bounds = frame.group_by(SPLIT).agg(
        pl.len().alias("rows"),
        pl.col(EVENT_TIMESTAMP).min().alias("from"),
        pl.col(EVENT_TIMESTAMP).max().alias("to"),
        label_statistic.alias(label_name),
    )
    counts = {row[SPLIT]: row["rows"] for row in bounds.iter_rows(named=True)}
    windows = {row[SPLIT]: (str(row["from"]), str(row["to"])) for row in bounds.iter_rows(named=True)}
    test, task = frame.filter(pl.col(SPLIT) == "test"), task_of(spec)
    labels_of_test = test[LABEL].to_numpy()
    identity = TrainingSetIdentity(
        rows=len(frame),
        content_sha256=content_sha256(frame.sort(spec.entity, EVENT_TIMESTAMP)),
        first_event=str(frame[EVENT_TIMESTAMP].min()),
        last_event=str(frame[EVENT_TIMESTAMP].max()),
        train_from=windows.get("train", ("", ""))[0],
        train_to=windows.get("train", ("", ""))[1],
    )
    return dg.MaterializeResult(
        value=identity,
        metadata={
            "dagster/row_count": len(frame),
            **{f"{split}_rows": counts.get(split, 0) for split in (*SPLITS, UNLABELLED)},
            "splits": markdown_table(bounds.sort("from").to_dicts()),
            label_name: float(frame.select(label_statistic).item() or 0.0),
            "test_from": windows.get("test", ("", ""))[0],
            "test_to": windows.get("test", ("", ""))[1],
            **(
                {
                    "test_positive_events": evidence(
                        task.resampling_groups(labels_of_test, test[WINDOW].to_numpy())
                    )
                }
                if task.binary_labels
                else {}
            ),
            "train_from": identity.train_from,
            "train_to": identity.train_to,
            "first_event": identity.first_event,
            "last_event": identity.last_event,
            "content_sha256": identity.content_sha256,
        },
    )


def train_candidate(
    spec: UseCaseSpec,
    warehouse: DuckDBResource,
    settings: Settings,
    identity: TrainingSetIdentity,
    run: RunInfo,
) -> dg.MaterializeResult:
    """Search, fit on train, choose on validation, register in MLflow with what it was trained on
    (``identity``: content hash, windows); hands on the ``Candidate``."""
    from ml_platform.training import registry  # MLflow is slow to import: load it in runs only
    from ml_platform.training.tune import TrainingDataError, fit_candidate

    train, valid = read_split(warehouse, spec, "train"), read_split(warehouse, spec, "validation")
    try:
        candidate = fit_candidate(spec, train, valid, settings.ray_address)
    except TrainingDataError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    best, trials, scored_on = candidate.chosen, candidate.trials, candidate.selected_on
    metric = selection_metric(spec)
    params = {
        "task": spec.model.task,
        "algorithm": spec.model.algorithm,
        **spec.model.params,
        **best.params,
        "seed": spec.model.seed,
        "features": ",".join(spec.features.feature_names()),
        "training_window": window_text(spec),
        "trials": len(trials),
        "selected_on": scored_on,
        **candidate.finalized,
    }
    tags = {
        "use_case": spec.name,
        "git_commit": git_commit(),
        "dagster_code_version": run.code_version,
        "dagster_run_id": run.run_id,
        "training_rows": str(len(train)),
        "training_content_sha256": identity.content_sha256,
        "training_first_event": identity.first_event,
        "training_last_event": identity.last_event,
        # The train window: the reference a drift report compares recent data with.
        "train_from": identity.train_from,
        "train_to": identity.train_to,
        **{f"library.{name}": package_version(name) for name in LIBRARIES},
    }
    metrics = {"train_rows": float(len(train)), f"validation_{metric}": best.score}
    ref = registry.log_candidate(
        settings, spec, candidate.pipeline, _features(train, spec).head(100), params, metrics, tags
    )
    experiment_id = registry.ensure_experiment(settings, spec.name)
    return dg.MaterializeResult(
        value=Candidate(version=str(ref.version), mlflow_run_id=ref.run_id, artifact_sha256=ref.sha256),
        metadata={
            "model_version": ref.version,
            "mlflow_run_id": ref.run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_run_url(settings, experiment_id, ref.run_id)),
            "artifact_sha256": ref.sha256,
            "train_rows": len(train),
            "task": spec.model.task,
            "selected_params": best.params,
            f"validation_{metric}": best.score,
            "selected_on": scored_on,
            **candidate.finalized,
            "trials": markdown_table(
                [
                    {
                        **t.params,
                        "score": round(t.score, 5),
                        "clearly_better_than_spec_params": t.clearly_better,
                        "chosen": t is best,
                        "ray_node": t.node[:12] or "in process",
                    }
                    for t in trials
                ]
            ),
            # Where the trials ran: the Ray node ids, none when they ran in the run's process.
            "trial_nodes": sorted({t.node for t in trials if t.node}),
        },
    )


def evaluate_candidate(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings, candidate: Candidate
) -> dg.MaterializeResult:
    """Held-out metrics, slices, behaviour, latency and size of ``candidate``: the gate's verdict,
    handed on as an ``Evaluation``."""
    from ml_platform.training import registry
    from ml_platform.training.evaluate import latency_ms
    from ml_platform.training.gate import judge

    cache, task, version = settings.model_cache, task_of(spec), candidate.version
    ref = registry.model_ref(settings, spec.name, version)
    pipeline = registry.load_verified_model(ref, cache, task)
    test = read_split(warehouse, spec, "test")
    champion_ref = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    champion_model = None
    if champion_ref is not None and champion_ref.version != version:
        champion_model = registry.load_verified_model(champion_ref, cache, task)
    train = read_split(warehouse, spec, "train") if spec.gate.baseline is not None else None
    result = judge(
        pipeline, champion_model, champion_ref.version if champion_ref else None, test, spec, train
    )
    speed = latency_ms(task, pipeline, _features(test, spec))
    size = sum(p.stat().st_size for p in (cache / spec.name / version).rglob("*") if p.is_file())
    logged = {
        **result.overall,
        **{f"baseline/{name}": value for name, value in result.baseline.items()},
        **result.behaviour,
        **speed,
        "artifact_bytes": float(size),
    }
    registry.log_evaluation(settings, ref, logged)
    client = registry.configure(settings)
    client.set_model_version_tag(spec.name, version, GATE_PASSED_TAG, str(result.passed).lower())
    figures = {}
    if "calibration" in result.diagnostics:  # a reliability diagram, in MLflow and in Dagster
        from ml_platform.training.plots import plot_calibration

        path = settings.reports_dir / spec.name / f"calibration_v{version}.png"
        plot_calibration(result.diagnostics["calibration"], path, f"{spec.name} v{version}, test rows")
        client.log_artifact(ref.run_id, str(path))
        figures["calibration_plot"] = dg.MetadataValue.path(str(path))
    finite = {k: float(v) for k, v in logged.items() if isinstance(v, int | float) and math.isfinite(v)}
    return dg.MaterializeResult(
        value=Evaluation(version=version, gate_passed=result.passed, metrics=finite),
        metadata={
            "model_version": version,
            "gate_passed": result.passed,
            **logged,
            "slices": markdown_table([{"slice": name, **m} for name, m in result.slices.items()]),
            **(
                {
                    "per_entity": markdown_table(
                        [
                            {"scope": k, **m}
                            for k, m in result.scopes.items()
                            if k.startswith(f"{spec.entity}=")
                        ]
                    )
                }
                if spec.gate.per_entity
                else {}
            ),
            **{name: markdown_table(rows) for name, rows in result.diagnostics.items()},
            **figures,
            **result.check(NOT_WORSE).metadata,
        },
        check_results=[
            dg.AssetCheckResult(check_name=c.name, passed=c.passed, metadata=c.metadata)
            for c in result.checks
        ],
    )


def promote(
    spec: UseCaseSpec, settings: Settings, evaluation: Evaluation, actor: str
) -> dg.MaterializeResult:
    """Move the champion alias to the evaluated version, only when the registry says it passed the
    gate (the tag the evaluation set, not only what was handed on)."""
    from ml_platform.training import registry

    version = evaluation.version
    client = registry.configure(settings)
    if client.get_model_version(spec.name, version).tags.get(GATE_PASSED_TAG) != "true":
        raise dg.Failure(f"{spec.name} v{version} has not passed the gate; champion not moved")
    gate = spec.gate
    metrics = {
        m: evaluation.metrics[m]
        for m in (*gate.min_metrics, *gate.max_metrics, *gate.max_regression)
        if m in evaluation.metrics
    }
    move = registry.move_alias(
        settings,
        spec.name,
        version,
        registry.CHAMPION,
        reason="passed the evaluation gate",
        actor=actor,
        metrics=metrics,
    )
    return dg.MaterializeResult(
        value=Champion(version=version, previous_version=move["from_version"] or ""),
        metadata={
            "champion_version": version,
            "previous_version": move["from_version"] or "",
            "moved": move["changed"],
            "by": move["by"],
            "reason": move["reason"],
            **metrics,
        },
    )
