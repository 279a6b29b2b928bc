"""Live performance from delayed labels, training-serving skew and serving SLOs, as plain functions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.spec import UseCaseSpec
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


def live_metrics(labelled: pl.DataFrame, score_column: str = "anomaly_score") -> dict[str, float]:
    """Metrics of the served scores against the labels; a metric that needs positives (labelled
    or predicted) is left out when there are none, rather than reported as 0."""
    if labelled.is_empty():
        return {"rows": 0.0}
    scores, labels = labelled[score_column].to_numpy(), labelled[LABEL].to_numpy()
    from ml_platform.training.evaluate import detection_metrics  # scikit-learn: not at load

    metrics = detection_metrics(scores, labels)
    if labels.sum() == 0:
        for name in ("recall", "f1"):
            metrics.pop(name, None)
    if (scores > 0).sum() == 0:
        metrics.pop("precision", None)
    return metrics


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
