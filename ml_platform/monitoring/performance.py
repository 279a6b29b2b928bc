"""Live performance from delayed labels, training-serving skew and serving SLOs, as plain functions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.spec import UseCaseSpec
from ml_platform.tasks import Task
from ml_platform.training.compare import Scored
from ml_platform.training.dataset import LABEL, label_rows


def judged_predictions(
    predictions: pl.DataFrame,
    labels: pl.DataFrame,
    spec: UseCaseSpec,
    labelled_days: list[dt.date],
    now: dt.datetime,
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Served feature vectors old enough for their labels (``label_lateness``) whose label is known,
    each with its ``label`` (see ``training.dataset.label_rows``); a vector served many times by one
    version counts once. Anomaly windows are known on the days their labels arrived."""
    horizon = now - spec.monitoring.label_lateness
    old = predictions.filter(pl.col("feature_event_timestamp") <= horizon)
    keyed = old.rename({"feature_event_timestamp": EVENT_TIMESTAMP}).unique(
        subset=["model_version", spec.entity, EVENT_TIMESTAMP], keep="first", maintain_order=True
    )
    found = label_rows(keyed, labels, spec, labelled_days, now).get_column(LABEL)
    judged = keyed.with_columns(found).filter(pl.col(LABEL).is_not_null())
    stats = {
        "predictions": float(len(predictions)),
        "matured": float(len(keyed)),
        "labelled": float(len(judged)),
        "label_coverage": len(judged) / len(keyed) if len(keyed) else 0.0,
    }
    return judged, stats


def logged_answers(task: Task, logged: pl.DataFrame) -> Scored:
    """What the served model answered, as the prediction log recorded it."""
    decisions = logged[task.decision_output].to_numpy() if task.decision_output else None
    return Scored(task.logged_scores(logged), decisions)


def live_metrics(task: Task, answers: Scored, labelled: pl.DataFrame) -> dict[str, float]:
    """The task's metrics of ``answers`` against ``labelled``'s labels; a metric that needs
    positives (labelled or decided) is left out when there are none, rather than reported as 0."""
    if labelled.is_empty():
        return {"rows": 0.0}
    labels = labelled[LABEL].to_numpy()
    metrics = task.evaluate(answers.scores, answers.decisions, labels, None)
    if task.binary_labels and labels.sum() == 0:
        for name in ("recall", "f1"):
            metrics.pop(name, None)
    if answers.decisions is not None and answers.decisions.astype(bool).sum() == 0:
        metrics.pop("precision", None)
    return metrics


def missed_live_slos(spec: UseCaseSpec, live: dict[str, float]) -> list[dict[str, object]]:
    """The live SLOs ``live`` (metrics of the champion's judged predictions) misses: a metric
    below its floor or an error above its ceiling, once enough rows are labelled."""
    monitoring = spec.monitoring
    if live.get("rows", 0) < monitoring.min_labelled_rows:
        return []
    missed: list[dict[str, object]] = [
        {"metric": m, "live": live[m], "minimum": floor}
        for m, floor in monitoring.min_live_metrics.items()
        if m in live and live[m] < floor
    ]
    missed += [
        {"metric": m, "live": live[m], "maximum": ceiling}
        for m, ceiling in monitoring.max_live_metrics.items()
        if m in live and live[m] > ceiling
    ]
    return missed


def gaps_vs_previous(
    task: Task, spec: UseCaseSpec, champion: dict[str, float], previous: dict[str, float]
) -> dict[str, float]:
    """Per SLO metric, how far the champion is ahead of the previous champion on the same rows
    (negative: behind), whichever way the metric improves."""
    monitoring = spec.monitoring
    names = [*monitoring.min_live_metrics, *monitoring.max_live_metrics]
    gaps = {}
    for name in names:
        if name in previous:
            ahead = champion.get(name, 0.0) - previous[name]
            gaps[name] = ahead if task.metric(name).higher_is_better else -ahead
    return gaps


def skew(
    logged: pl.DataFrame, offline: pl.DataFrame, spec: UseCaseSpec, tolerance: float
) -> dict[str, float]:
    """Largest difference per feature between vectors served online and the offline table's row
    for the same entity and event time (rows found in both only)."""
    names = spec.features.feature_names()
    joined = logged.join(offline, on=[spec.entity, EVENT_TIMESTAMP], suffix="_offline")
    worst = {}
    for name in names:
        online, batch = joined[name].cast(pl.Float64), joined[f"{name}_offline"].cast(pl.Float64)
        both_null = online.is_null() & batch.is_null()
        one_null = online.is_null() ^ batch.is_null()
        diff = (online - batch).abs().fill_null(0.0)
        worst[name] = float(np.inf) if one_null.any() else float(diff.filter(~both_null).max() or 0.0)
    worst["compared_rows"] = float(len(joined))
    return worst


def latency_summary(rows: pl.DataFrame, window: dt.timedelta) -> dict[str, dict[str, float]]:
    """p50/p99 latency and throughput per model version over the window."""
    summary = {}
    seconds = window.total_seconds()
    for (version,), group in rows.group_by("model_version"):
        latency = group["latency_ms"].drop_nulls().to_numpy()
        summary[str(version)] = {
            "requests": float(len(group)),
            "throughput_rps": len(group) / seconds,
            "p50_ms": float(np.percentile(latency, 50)) if len(latency) else 0.0,
            "p99_ms": float(np.percentile(latency, 99)) if len(latency) else 0.0,
        }
    return summary
