"""Model selection: a seeded search over the spec's space, fit on train, scored on validation.

Validation always follows the train window in time. An anomaly detector is scored on the
labelled anomalies of the validation window when it has some; otherwise anomalies are injected
into a copy of the validation rows (seeded) and those are the positives. A supervised task is
scored on the validation labels; a classifier then gets its threshold there
(``Task.finalize``).

The spec's own params stay the choice unless another trial beats them beyond the validation
rows' noise (a paired bootstrap over the validation's groups, see ``compare``): a window holding
a handful of events would otherwise pick parameters by chance, and every retrain would differ
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

from ml_platform.spec import ModelSpec, UseCaseSpec
from ml_platform.tasks import selection_metric, task_of
from ml_platform.training.compare import Scored, paired_differences
from ml_platform.training.dataset import LABEL, WINDOW
from ml_platform.training.evaluate import model_input


class TrainingDataError(ValueError):
    """Training rows a model cannot be fit on; the message says what is missing."""


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    score: float
    scores: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))
    # Whether the score beats the spec's params with confidence (always False for those params).
    clearly_better: bool = False
    decisions: np.ndarray | None = field(repr=False, compare=False, default=None)
    # The Ray node that ran it ("" when it ran in this process).
    node: str = field(compare=False, default="")


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


def run_trial(
    spec: UseCaseSpec,
    params: dict[str, Any],
    train: pd.DataFrame,
    train_labels: np.ndarray,
    valid: pd.DataFrame,
    labels: np.ndarray,
) -> Trial:
    task, model = task_of(spec), spec.model
    pipeline = task.fit(
        task.build(model.algorithm, {**model.params, **params}, model.seed), train, train_labels
    )
    scores = task.scores(pipeline, valid)
    decisions = task.decisions(pipeline, scores)
    metric = selection_metric(spec)
    value = task.evaluate(scores, decisions, labels, None).get(metric, float("nan"))
    return Trial(params, float(value), scores, decisions=decisions)


def choose(
    trials: list[Trial], labels: np.ndarray, events: np.ndarray | None, spec: UseCaseSpec
) -> list[Trial]:
    """The trials, each marked whether it beats the first (the spec's params) with confidence."""
    task, metric = task_of(spec), selection_metric(spec)
    higher_is_better = task.metric(metric).higher_is_better
    groups = task.resampling_groups(labels, events)
    base = trials[0]
    marked = [base]
    for trial in trials[1:]:
        difference = paired_differences(
            task,
            Scored(trial.scores, trial.decisions),
            Scored(base.scores, base.decisions),
            labels,
            groups,
            (metric,),
            seed=spec.model.seed,
        )[metric]
        marked.append(replace(trial, clearly_better=difference.surely_better(higher_is_better)))
    return marked


def tune(
    spec: UseCaseSpec,
    train: pd.DataFrame,
    train_labels: np.ndarray,
    valid: pd.DataFrame,
    labels: np.ndarray,
    ray_address: str | None = None,
    events: np.ndarray | None = None,
) -> tuple[Trial, list[Trial], str]:
    """The chosen trial, every trial, and what the selection scored on.

    The choice is the spec's params unless some trial clearly beats them on validation; then
    the best of those (ties keep the earlier one). ``events`` names each validation row's anomaly
    event (None outside one), so that the rows of one event are resampled together."""
    task = task_of(spec)
    valid, labels, events, scored_on = task.selection_rows(valid, labels, events, spec.model.seed)
    params = candidates(spec.model)
    if ray_address:
        trials = _tune_on_ray(spec, params, train, train_labels, valid, labels, ray_address)
    else:
        trials = [run_trial(spec, p, train, train_labels, valid, labels) for p in params]
    trials = choose(trials, labels, events, spec)
    better = [t for t in trials if t.clearly_better]
    sign = 1.0 if task.metric(selection_metric(spec)).higher_is_better else -1.0
    best = max(better, key=lambda t: sign * t.score) if better else trials[0]  # max keeps the first of ties
    return best, trials, scored_on


def _tune_on_ray(spec, params, train, train_labels, valid, labels, address: str) -> list[Trial]:
    """Trials as Ray tasks over the cluster at ``address`` (the data shipped once)."""
    from ml_platform.distributed import spread

    done = spread(address, _trial, params, spec, train, train_labels, valid, labels)
    return [replace(trial, node=node) for trial, node in done]


def _trial(params, spec, train, train_labels, valid, labels) -> Trial:
    return run_trial(spec, params, train, train_labels, valid, labels)


@dataclass(frozen=True)
class Candidate:
    pipeline: Any  # the artifact to register: the fitted pipeline, or a classifier at its threshold
    chosen: Trial
    trials: list[Trial]
    selected_on: str
    # What ``Task.finalize`` chose beside the params (a classifier's threshold and how).
    finalized: dict[str, Any] = field(default_factory=dict)


def fit_candidate(
    spec: UseCaseSpec, train: pl.DataFrame, valid: pl.DataFrame, ray_address: str | None = None
) -> Candidate:
    """The search on the training set's train and validation rows, then the chosen params fit
    on the train rows: the candidate the ``model`` asset registers."""
    task, model = task_of(spec), spec.model
    if task.supervised:  # a train row whose label has not arrived teaches nothing
        train = train.filter(pl.col(LABEL).is_not_null())
    problem = task.unusable_labels(train[LABEL].to_numpy())
    if problem:
        raise TrainingDataError(f"{spec.name}: the train window cannot fit a {task.name} model: {problem}")
    names = spec.features.feature_names()
    train_x = model_input(train.select(names).to_pandas(), names)
    valid_x = model_input(valid.select(names).to_pandas(), names)
    train_y, valid_y = train[LABEL].to_numpy(), valid[LABEL].to_numpy()
    chosen, trials, selected_on = tune(
        spec, train_x, train_y, valid_x, valid_y, ray_address, events=valid[WINDOW].to_numpy()
    )
    pipeline = task.fit(
        task.build(model.algorithm, {**model.params, **chosen.params}, model.seed), train_x, train_y
    )
    artifact, finalized = task.finalize(pipeline, train_x, train_y, valid_x, valid_y, spec)
    return Candidate(artifact, chosen, trials, selected_on, finalized)
