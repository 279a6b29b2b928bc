"""Model selection: a seeded search over the spec's space, fit on train, scored on validation.

Validation always follows the train window in time. For unsupervised anomaly detection the
score uses the labelled anomaly windows when the validation window has some; otherwise anomalies
are injected into a copy of the validation rows (seeded) and those are the positives.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ml_platform.spec import ModelSpec
from ml_platform.training.model import anomaly_scores, build_pipeline

METRICS = {"average_precision": average_precision_score, "roc_auc": roc_auc_score}


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    score: float


def candidates(model: ModelSpec) -> list[dict[str, Any]]:
    """The spec's own params first, then up to ``trials - 1`` other grid points (seeded sample)."""
    names = sorted(model.search_space)
    grid = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(model.search_space[n] for n in names))
    ]
    base = {n: model.params[n] for n in names if n in model.params}
    others = [g for g in grid if g != base]
    random.Random(model.seed).shuffle(others)
    return [base, *others[: max(model.trials - 1, 0)]]


def inject_anomalies(
    features: pd.DataFrame, seed: int, share: float = 0.02
) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of ``features`` where a share of rows is pushed 6 standard deviations off, labelled 1."""
    rng = np.random.default_rng(seed)
    shifted = features.copy()
    rows = rng.choice(len(features), size=max(1, int(len(features) * share)), replace=False)
    spread = features.std().fillna(1.0).replace(0, 1.0)
    signs = rng.choice([-1.0, 1.0], size=(len(rows), features.shape[1]))
    shifted.iloc[rows] = features.iloc[rows].to_numpy() + 6 * spread.to_numpy() * signs
    labels = np.zeros(len(features), dtype=int)
    labels[rows] = 1
    return shifted, labels


def selection_data(
    features: pd.DataFrame, labels: np.ndarray, seed: int
) -> tuple[pd.DataFrame, np.ndarray, str]:
    if 0 < labels.sum() < len(labels):
        return features, labels, "labelled anomaly windows"
    shifted, injected = inject_anomalies(features, seed)
    return shifted, injected, "injected anomalies"


def run_trial(
    model: ModelSpec, params: dict[str, Any], train: pd.DataFrame, valid: pd.DataFrame, labels: np.ndarray
) -> Trial:
    pipeline = build_pipeline(model, params).fit(train)
    return Trial(params, float(METRICS[model.selection_metric](labels, anomaly_scores(pipeline, valid))))


def tune(
    model: ModelSpec,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    labels: np.ndarray,
    ray_address: str | None = None,
) -> tuple[Trial, list[Trial], str]:
    """The best trial (ties keep the earlier one), every trial, and what the selection scored on."""
    valid, labels, scored_on = selection_data(valid, labels, model.seed)
    params = candidates(model)
    if ray_address:
        trials = _tune_on_ray(model, params, train, valid, labels, ray_address)
    else:
        trials = [run_trial(model, p, train, valid, labels) for p in params]
    best = max(trials, key=lambda t: t.score)  # max keeps the first of equal scores
    return best, trials, scored_on


def _tune_on_ray(model, params, train, valid, labels, address: str) -> list[Trial]:
    """Trials as Ray tasks on the cluster at ``address`` (data shipped once via the object store)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="ml_platform", log_to_driver=False, logging_level="WARNING")
    remote = ray.remote(num_cpus=1)(run_trial)
    refs = [ray.put(x) for x in (train, valid, labels)]
    return ray.get([remote.remote(model, p, *refs) for p in params])
