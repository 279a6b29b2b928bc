"""Held-out evaluation: metrics overall and per slice, behavioural tests, latency and size.

Behavioural tests (as in Made-With-ML) check properties rather than scores:
- perturbation: noise of ``noise_scale`` x each feature's standard deviation flips at most
  ``max_flip_rate`` of the decisions;
- invariance: fields that are not features (the entity id, any extra field) do not change a
  score, and a row scores the same alone as inside a batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline

from ml_platform.spec import GateSpec, Slice, UseCaseSpec
from ml_platform.training.compare import Comparison, compare_scopes
from ml_platform.training.dataset import LABEL, WINDOW
from ml_platform.training.model import anomaly_scores


def model_input(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """The model's input frame: exactly the declared features, in order; anything else is dropped.
    Serving and evaluation both go through here."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.reindex(columns=feature_names).astype(float)


def detection_metrics(
    scores: np.ndarray, labels: np.ndarray, windows: np.ndarray | None = None
) -> dict[str, float]:
    predicted = (scores > 0).astype(int)
    metrics = {
        "rows": float(len(labels)),
        "anomaly_share": float(labels.mean()) if len(labels) else 0.0,
        "predicted_anomaly_share": float(predicted.mean()) if len(labels) else 0.0,
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
    }
    if 0 < labels.sum() < len(labels):
        metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        metrics["average_precision"] = float(average_precision_score(labels, scores))
    if windows is not None:
        frame = pd.DataFrame({"window": windows, "hit": predicted}).dropna(subset=["window"])
        if len(frame):
            metrics["window_recall"] = float(frame.groupby("window")["hit"].max().mean())
    return metrics


def slice_labels(test: pl.DataFrame, slice_: Slice) -> pl.Series:
    column = test[slice_.column]
    if slice_.bins is None:
        return column.cast(pl.String)
    edges = list(slice_.bins)
    return column.cut(edges[1:-1], labels=[f"[{a:g},{b:g})" for a, b in zip(edges, edges[1:], strict=False)])


def slice_metrics(
    scores: np.ndarray, test: pl.DataFrame, slices: tuple[Slice, ...]
) -> dict[str, dict[str, float]]:
    labels = test[LABEL].to_numpy()
    result = {}
    for slice_ in slices:
        groups = slice_labels(test, slice_).cast(pl.String).to_numpy()
        for group in sorted({g for g in groups if g is not None}):
            mask = groups == group
            result[f"{slice_.name}={group}"] = detection_metrics(scores[mask], labels[mask])
    return result


def behaviour(
    pipeline: Pipeline,
    features: pd.DataFrame,
    gate: GateSpec,
    entity: str,
    seed: int,
    entities: np.ndarray | None = None,
) -> dict[str, float]:
    """The behavioural tests. The noise is scaled by each feature's spread within each row's entity
    (``entities``), so that entities on very different scales are each nudged by a small step."""
    rng = np.random.default_rng(seed)
    base = anomaly_scores(pipeline, features)
    if entities is None:
        spread = np.broadcast_to(features.std().fillna(0).to_numpy(), features.shape)
    else:
        spread = features.groupby(np.asarray(entities)).transform("std").fillna(0).to_numpy()
    noise = rng.normal(0.0, 1.0, features.shape) * spread * gate.noise_scale
    noisy = anomaly_scores(pipeline, features + noise)
    flip_rate = float(np.mean((base > 0) != (noisy > 0)))

    with_extras = features.assign(**{entity: "someone-else", "note": "irrelevant"})
    extra_fields = anomaly_scores(pipeline, model_input(with_extras, list(features.columns)))
    single = np.array(
        [anomaly_scores(pipeline, features.iloc[[i]])[0] for i in range(min(50, len(features)))]
    )
    return {
        "noise_flip_rate": flip_rate,
        "irrelevant_fields_max_change": float(np.max(np.abs(extra_fields - base))),
        "single_vs_batch_max_change": float(np.max(np.abs(single - base[: len(single)]))),
    }


def latency_ms(pipeline: Pipeline, features: pd.DataFrame, repeats: int = 30) -> dict[str, float]:
    def median_ms(frame: pd.DataFrame, n: int) -> float:
        timings = []
        for _ in range(n):
            start = time.perf_counter()
            anomaly_scores(pipeline, frame)
            timings.append((time.perf_counter() - start) * 1000)
        return float(np.median(timings))

    return {
        "latency_ms_1_row": median_ms(features.iloc[:1], repeats),
        "latency_ms_1000_rows": median_ms(features.iloc[:1000], max(3, repeats // 10)),
    }


def evaluate(
    pipeline: Pipeline, test: pl.DataFrame, spec: UseCaseSpec
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall metrics (with window recall) and per-slice metrics on the test rows."""
    features = model_input(
        test.select(spec.features.feature_names()).to_pandas(), spec.features.feature_names()
    )
    scores = anomaly_scores(pipeline, features)
    labels = test[LABEL].to_numpy()
    return detection_metrics(scores, labels, test[WINDOW].to_numpy()), slice_metrics(
        scores, test, spec.gate.slices
    )


def gate_scopes(test: pl.DataFrame, slices: tuple[Slice, ...]) -> dict[str, np.ndarray]:
    """Row masks the gate compares on: every row (``overall``), then each group of each slice."""
    scopes = {"overall": np.ones(len(test), dtype=bool)}
    for slice_ in slices:
        groups = slice_labels(test, slice_).cast(pl.String).to_numpy()
        for group in sorted({g for g in groups if g is not None}):
            scopes[f"{slice_.name}={group}"] = groups == group
    return scopes


def compare_with_champion(
    candidate: Pipeline, champion: Pipeline, test: pl.DataFrame, spec: UseCaseSpec
) -> list[Comparison]:
    """The candidate against the champion, both scored on the same test rows, per metric of the
    gate's ``max_regression``, overall and per slice (see ``compare.compare_scopes``)."""
    names = spec.features.feature_names()
    features = model_input(test.select(names).to_pandas(), names)
    return compare_scopes(
        anomaly_scores(candidate, features),
        anomaly_scores(champion, features),
        test[LABEL].to_numpy(),
        test[WINDOW].to_numpy(),
        gate_scopes(test, spec.gate.slices),
        spec.gate.max_regression,
        min_positive_events=spec.gate.min_positive_events,
        seed=spec.model.seed,
        confidence=spec.gate.confidence,
    )
