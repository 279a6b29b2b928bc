"""Held-out evaluation: the task's metrics overall and per slice, behavioural tests, latency.

Behavioural tests (as in Made-With-ML) check properties rather than scores:
- perturbation: noise of ``noise_scale`` x each feature's standard deviation changes at most
  ``max_flip_rate`` of the answers (a decision that flips; for a regression, a prediction that
  moves by more than 10% of the predictions' spread);
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

from ml_platform.spec import GateSpec, Slice, UseCaseSpec
from ml_platform.tasks import Task, task_of
from ml_platform.training.compare import Comparison, Scored, compare_scopes, evidence
from ml_platform.training.dataset import LABEL, WINDOW


def model_input(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """The model's input frame: exactly the declared features, in order; anything else is dropped.
    Serving and evaluation both go through here."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.reindex(columns=feature_names).astype(float)


def features_of(frame: pl.DataFrame, spec: UseCaseSpec) -> pd.DataFrame:
    names = spec.features.feature_names()
    return model_input(frame.select(names).to_pandas(), names)


def score(task: Task, model: Any, features: pd.DataFrame) -> Scored:
    scores = task.scores(model, features)
    return Scored(scores, task.decisions(model, scores))


def slice_labels(test: pl.DataFrame, slice_: Slice) -> pl.Series:
    column = test[slice_.column]
    if slice_.bins is None:
        return column.cast(pl.String)
    edges = list(slice_.bins)
    return column.cut(edges[1:-1], labels=[f"[{a:g},{b:g})" for a, b in zip(edges, edges[1:], strict=False)])


def gate_scopes(test: pl.DataFrame, slices: tuple[Slice, ...]) -> dict[str, np.ndarray]:
    """Row masks the gate compares on: every row (``overall``), then each group of each slice."""
    scopes = {"overall": np.ones(len(test), dtype=bool)}
    for slice_ in slices:
        groups = slice_labels(test, slice_).cast(pl.String).to_numpy()
        for group in sorted({g for g in groups if g is not None}):
            scopes[f"{slice_.name}={group}"] = groups == group
    return scopes


def behaviour(
    task: Task,
    model: Any,
    features: pd.DataFrame,
    gate: GateSpec,
    entity: str,
    seed: int,
    entities: np.ndarray | None = None,
) -> dict[str, float]:
    """The behavioural tests. The noise is scaled by each feature's spread within each row's entity
    (``entities``), so that entities on very different scales are each nudged by a small step."""
    rng = np.random.default_rng(seed)
    base = task.scores(model, features)
    if entities is None:
        spread = np.broadcast_to(features.std().fillna(0).to_numpy(), features.shape)
    else:
        spread = features.groupby(np.asarray(entities)).transform("std").fillna(0).to_numpy()
    noise = rng.normal(0.0, 1.0, features.shape) * spread * gate.noise_scale
    noisy = task.scores(model, features + noise)
    flip_rate = float(np.mean(task.answer_changed(model, base, noisy)))

    with_extras = features.assign(**{entity: "someone-else", "note": "irrelevant"})
    extra_fields = task.scores(model, model_input(with_extras, list(features.columns)))
    single = np.array([task.scores(model, features.iloc[[i]])[0] for i in range(min(50, len(features)))])
    return {
        "noise_flip_rate": flip_rate,
        "irrelevant_fields_max_change": float(np.max(np.abs(extra_fields - base))),
        "single_vs_batch_max_change": float(np.max(np.abs(single - base[: len(single)]))),
    }


def latency_ms(task: Task, model: Any, features: pd.DataFrame, repeats: int = 30) -> dict[str, float]:
    def median_ms(frame: pd.DataFrame, n: int) -> float:
        timings = []
        for _ in range(n):
            start = time.perf_counter()
            task.scores(model, frame)
            timings.append((time.perf_counter() - start) * 1000)
        return float(np.median(timings))

    return {
        "latency_ms_1_row": median_ms(features.iloc[:1], repeats),
        "latency_ms_1000_rows": median_ms(features.iloc[:1000], max(3, repeats // 10)),
    }


def evaluate(
    model: Any, test: pl.DataFrame, spec: UseCaseSpec
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The task's metrics on the test rows, overall and per slice group."""
    task = task_of(spec)
    scored = score(task, model, features_of(test, spec))
    labels, windows = test[LABEL].to_numpy(), test[WINDOW].to_numpy()
    overall = task.evaluate(scored.scores, scored.decisions, labels, windows)
    slices = {
        scope: task.evaluate(part.scores, part.decisions, labels[mask], None)
        for scope, mask in gate_scopes(test, spec.gate.slices).items()
        if scope != "overall"
        for part in (scored.take(mask),)
    }
    return overall, slices


def entity_scopes(test: pl.DataFrame, entity: str) -> dict[str, np.ndarray]:
    """A row mask per entity of the test rows (``<entity>=<id>``)."""
    ids = test[entity].cast(pl.String).to_numpy()
    return {f"{entity}={value}": ids == value for value in sorted(set(ids))}


def scope_metrics(model: Any, test: pl.DataFrame, spec: UseCaseSpec) -> dict[str, dict[str, float]]:
    """The task's metrics in every scope the gate floors: each slice group, and each entity when
    the gate judges entities, with the scope's evidence (positive events, or labelled rows)."""
    task = task_of(spec)
    scored = score(task, model, features_of(test, spec))
    labels, windows = test[LABEL].to_numpy(), test[WINDOW].to_numpy()
    scopes = {k: v for k, v in gate_scopes(test, spec.gate.slices).items() if k != "overall"}
    if spec.gate.per_entity:
        scopes |= entity_scopes(test, spec.entity)
    found = {}
    for scope, mask in scopes.items():
        part = scored.take(mask)
        found[scope] = {
            **task.evaluate(part.scores, part.decisions, labels[mask], windows[mask]),
            "evidence": float(evidence(task.resampling_groups(labels[mask], windows[mask]))),
        }
    return found


def baseline_metrics(
    train: pl.DataFrame, test: pl.DataFrame, spec: UseCaseSpec
) -> tuple[dict[str, float], Scored] | None:
    """The spec's baseline fit on the train rows and scored on the test rows (None without one)."""
    baseline, task = spec.gate.baseline, task_of(spec)
    if baseline is None:
        return None
    names = list(baseline.features) or spec.features.feature_names()
    if task.supervised:
        train = train.filter(pl.col(LABEL).is_not_null())
    train_x = model_input(train.select(names).to_pandas(), names)
    model = task.build(baseline.algorithm, baseline.params, spec.model.seed)
    model = task.fit(model, train_x, train[LABEL].to_numpy())
    scored = score(task, model, model_input(test.select(names).to_pandas(), names))
    metrics = task.evaluate(scored.scores, scored.decisions, test[LABEL].to_numpy(), test[WINDOW].to_numpy())
    return metrics, scored


def compare_with_champion(
    candidate: Any, champion: Any, test: pl.DataFrame, spec: UseCaseSpec
) -> list[Comparison]:
    """The candidate against the champion, both scored on the same test rows, per metric of the
    gate's ``max_regression``, overall and per slice (see ``compare.compare_scopes``)."""
    task = task_of(spec)
    features = features_of(test, spec)
    return compare_scopes(
        task,
        score(task, candidate, features),
        score(task, champion, features),
        test[LABEL].to_numpy(),
        test[WINDOW].to_numpy(),
        gate_scopes(test, spec.gate.slices),
        spec.gate.max_regression,
        min_positive_events=spec.gate.min_positive_events,
        seed=spec.model.seed,
        confidence=spec.gate.confidence,
    )
