"""Model selection: a seeded search over the spec's space, fit on train, scored on validation.

Validation always follows the train window in time. For unsupervised anomaly detection the
score uses the labelled anomaly windows when the validation window has some; otherwise anomalies
are injected into a copy of the validation rows (seeded) and those are the positives.

The spec's own params stay the choice unless another trial beats them beyond the validation
rows' noise (a paired bootstrap over the validation's anomaly events): a window holding a
handful of events would otherwise pick parameters by chance, and every retrain would differ
from the champion in its parameters as well as in its data.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline

from ml_platform.spec import ModelSpec, UseCaseSpec
from ml_platform.training.compare import paired_differences
from ml_platform.training.dataset import LABEL, WINDOW
from ml_platform.training.evaluate import model_input
from ml_platform.training.model import anomaly_scores, build_pipeline

METRICS = {"average_precision": average_precision_score, "roc_auc": roc_auc_score}


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    score: float
    scores: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))
    # Whether the score beats the spec's params with confidence (always False for those params).
    clearly_better: bool = False


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
    features: pd.DataFrame, labels: np.ndarray, seed: int, events: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, str]:
    """Validation rows, their labels and anomaly events, and what they are."""
    if 0 < labels.sum() < len(labels):
        return features, labels, events, "labelled anomaly windows"
    shifted, injected = inject_anomalies(features, seed)
    return shifted, injected, None, "injected anomalies"


def run_trial(
    model: ModelSpec, params: dict[str, Any], train: pd.DataFrame, valid: pd.DataFrame, labels: np.ndarray
) -> Trial:
    pipeline = build_pipeline(model, params).fit(train)
    scores = anomaly_scores(pipeline, valid)
    return Trial(params, float(METRICS[model.selection_metric](labels, scores)), scores)


def choose(
    trials: list[Trial], labels: np.ndarray, events: np.ndarray | None, model: ModelSpec
) -> list[Trial]:
    """The trials, each marked whether it beats the first (the spec's params) with confidence."""
    base = trials[0]
    marked = [base]
    for trial in trials[1:]:
        difference = paired_differences(
            trial.scores, base.scores, labels, events, (model.selection_metric,), seed=model.seed
        )[model.selection_metric]
        marked.append(replace(trial, clearly_better=difference.surely_higher))
    return marked


def tune(
    model: ModelSpec,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    labels: np.ndarray,
    ray_address: str | None = None,
    events: np.ndarray | None = None,
) -> tuple[Trial, list[Trial], str]:
    """The chosen trial, every trial, and what the selection scored on.

    The choice is the spec's params unless some trial clearly beats them on validation; then
    the best of those (ties keep the earlier one). ``events`` names each validation row's anomaly
    event (None outside one), so that the rows of one event are resampled together."""
    valid, labels, events, scored_on = selection_data(valid, labels, model.seed, events)
    params = candidates(model)
    if ray_address:
        trials = _tune_on_ray(model, params, train, valid, labels, ray_address)
    else:
        trials = [run_trial(model, p, train, valid, labels) for p in params]
    trials = choose(trials, labels, events, model)
    better = [t for t in trials if t.clearly_better]
    best = max(better, key=lambda t: t.score) if better else trials[0]  # max keeps the first of ties
    return best, trials, scored_on


def _tune_on_ray(model, params, train, valid, labels, address: str) -> list[Trial]:
    """Trials as Ray tasks on the cluster at ``address`` (data shipped once via the object store)."""
    import ray

    from ml_platform.serving.cluster import stay_on_loopback

    if not ray.is_initialized():
        stay_on_loopback(address)
        ray.init(address=address, namespace="ml_platform", log_to_driver=False, logging_level="WARNING")
    remote = ray.remote(num_cpus=1)(run_trial)
    refs = [ray.put(x) for x in (train, valid, labels)]
    return ray.get([remote.remote(model, p, *refs) for p in params])


@dataclass(frozen=True)
class Candidate:
    pipeline: Pipeline
    chosen: Trial
    trials: list[Trial]
    selected_on: str


def fit_candidate(
    spec: UseCaseSpec, train: pl.DataFrame, valid: pl.DataFrame, ray_address: str | None = None
) -> Candidate:
    """The search on the training set's train and validation rows, then the chosen params fit
    on the train rows: the candidate the ``model`` asset registers."""
    names = spec.features.feature_names()
    train_x = model_input(train.select(names).to_pandas(), names)
    valid_x = model_input(valid.select(names).to_pandas(), names)
    chosen, trials, selected_on = tune(
        spec.model, train_x, valid_x, valid[LABEL].to_numpy(), ray_address, events=valid[WINDOW].to_numpy()
    )
    return Candidate(build_pipeline(spec.model, chosen.params).fit(train_x), chosen, trials, selected_on)
