"""What every model task provides, so that training, the gate, serving and monitoring never name
one task's outputs or metrics.

A task turns a fitted model and feature rows into

- a **score** per row: the number rows are ranked by (metrics, prediction drift, shadow scores);
- a **decision** per row where the task makes one (an anomaly flag, a class at a threshold);
- its **outputs**: what an answer, the prediction log and the prediction tables hold, each with
  its Open Inference Protocol v2 datatype.

Nothing here imports scikit-learn at module load: the definitions load without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

# Open Inference Protocol v2 datatypes and the DuckDB types that hold them.
SQL_TYPES = {"FP64": "DOUBLE", "BOOL": "BOOLEAN", "INT64": "BIGINT", "BYTES": "VARCHAR"}


@dataclass(frozen=True)
class Output:
    """One field of a prediction: its name in answers, the log and tables, and its v2 datatype."""

    name: str
    datatype: str
    description: str = ""

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.datatype]


@dataclass(frozen=True)
class Estimator:
    """A scikit-learn estimator a spec may name as ``model.algorithm``, with the defaults the
    platform sets (seeded, single-threaded) and a documented search space to start from."""

    name: str
    import_path: str  # "sklearn.ensemble.IsolationForest"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Mapping[str, tuple] = field(default_factory=dict)
    seeded: bool = True  # takes random_state

    def make(self, seed: int, params: Mapping[str, Any]) -> Any:
        module, _, name = self.import_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        seed_param = {"random_state": seed} if self.seeded else {}
        return cls(**{**self.defaults, **seed_param, **params})


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True
    # Whether the gate's paired bootstrap can compare two models on it (max_regression).
    comparable: bool = True


def preprocessing_steps(scale: bool) -> list[tuple[str, Any]]:
    """Imputation (median) and, for estimators that care about scale, standardization: fit with
    the estimator on the train rows only, so serving applies exactly the training transform."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        steps.append(("scale", StandardScaler()))
    return steps


class Task:
    """The base of every task; subclasses fill in the class attributes and the scoring methods."""

    name: str
    outputs: tuple[Output, ...]
    score_output: str  # the output holding the score
    decision_output: str | None = None  # the output holding the decision, where there is one
    estimators: Mapping[str, Estimator]
    scaled: frozenset[str] = frozenset()  # estimators that get a scaler before them
    metrics: tuple[Metric, ...]
    default_selection_metric: str
    # Types skops must be told to trust to load this task's artifacts: the project's list,
    # never one read from the artifact.
    trusted_types: tuple[str, ...] = ("numpy.dtype",)
    # What the gate's bootstrap draws, as counted against ``gate.min_positive_events``.
    evidence: str = "labelled row(s)"
    # Whether labels are needed to fit (anomaly detection fits without them).
    supervised: bool = True
    # Labels of rows: their polars type, whether they are 0 / 1 (``binary.ZeroOneLabels``), and
    # whether anomaly windows can give them.
    label_dtype: pl.DataType = pl.Float64()
    binary_labels: bool = False
    windows_allowed: bool = False

    # --- spec-facing -------------------------------------------------------------------

    def for_spec(self, spec: Any) -> Task:
        """The task as ``spec`` configures it (a multiclass task gets the spec's classes)."""
        return self

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    # --- labels ------------------------------------------------------------------------

    def parse_labels(self, text: pl.Expr) -> pl.Expr:
        """Label text as written in a file or a post -> the label value (null when invalid)."""
        raise NotImplementedError

    def label_rule(self) -> str:
        """How a label is written, for error messages."""
        raise NotImplementedError

    def json_label(self, value: Any) -> Any | None:
        """A label as posted in JSON -> its value (None when it is not a label of this task)."""
        raise NotImplementedError

    def label_statistic(self, labels: pl.Expr) -> tuple[str, pl.Expr]:
        """One number that sums up labels in the training set's metadata: its name and expression."""
        return ("label_share" if self.binary_labels else "label_mean"), labels.mean()

    # --- fitting -----------------------------------------------------------------------

    def unusable_labels(self, labels: np.ndarray) -> str | None:
        """Why these train labels cannot fit a model, or None when they can."""
        if self.supervised and len(labels) == 0:
            return "no labelled row"
        return None

    def build(self, algorithm: str, params: Mapping[str, Any], seed: int) -> Any:
        """An unfitted scikit-learn pipeline: preprocessing and the estimator."""
        from sklearn.pipeline import Pipeline

        estimator = self.estimators[algorithm]
        scale = algorithm in self.scaled
        return Pipeline([*preprocessing_steps(scale), ("model", estimator.make(seed, params))])

    def fit(self, pipeline: Any, features: Any, labels: np.ndarray | None) -> Any:
        return pipeline.fit(features, labels if self.supervised else None)

    def selection_rows(
        self, features: Any, labels: np.ndarray, events: np.ndarray | None, seed: int
    ) -> tuple[Any, np.ndarray, np.ndarray | None, str]:
        """The validation rows the search scores trials on, their labels and events, and what
        they are."""
        return features, labels, events, "validation labels"

    def finalize(
        self,
        pipeline: Any,
        train: Any,
        train_labels: np.ndarray,
        valid: Any,
        valid_labels: np.ndarray,
        spec: Any,
    ) -> tuple[Any, dict[str, Any]]:
        """The artifact to register from the chosen, fitted pipeline (a classifier gets its
        threshold here, chosen on validation) and what was chosen."""
        return pipeline, {}

    # --- scoring -----------------------------------------------------------------------

    def scores(self, model: Any, features: Any) -> np.ndarray:
        raise NotImplementedError

    def score_values(self, scores: np.ndarray) -> np.ndarray:
        """One number per row of ``scores`` (what the ``score_output`` holds): prediction drift and
        shadow scores follow it."""
        return scores

    def logged_scores(self, logged: pl.DataFrame) -> np.ndarray:
        """The scores, as ``scores`` returns them, from answers the prediction log recorded."""
        return logged[self.score_output].to_numpy().astype(float)

    def decisions(self, model: Any, scores: np.ndarray) -> np.ndarray | None:
        """The decision per row at the model's threshold; None for a task that makes none."""
        return None

    def columns(self, model: Any, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Every output as a column, from the scores."""
        raise NotImplementedError

    def answers(self, model: Any, scores: np.ndarray) -> list[dict[str, Any]]:
        """The outputs per row as JSON values."""
        columns = self.columns(model, scores)
        names = [o.name for o in self.outputs]
        return [{name: _json(columns[name][i]) for name in names} for i in range(len(scores))]

    # --- metrics -----------------------------------------------------------------------

    def evaluate(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None
    ) -> dict[str, float]:
        """Every metric of the task on labelled rows (``groups``: each row's event, or None)."""
        raise NotImplementedError

    def diagnostics(self, scores: np.ndarray, labels: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        """Tables the evaluation shows beside the metrics (a classifier's calibration curve)."""
        return {}

    def resampling_groups(self, labels: np.ndarray, events: np.ndarray | None) -> np.ndarray:
        """An id per row for the paired bootstrap: rows sharing an id are drawn together; rows
        with id -1 are drawn one by one among themselves (see ``training.compare``)."""
        return np.arange(len(labels))

    def weighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each comparable metric for every row of ``weights`` (resamples x rows)."""
        raise NotImplementedError

    def unweighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray
    ) -> dict[str, float]:
        """Each metric of ``weighted`` on the rows as they are (every row drawn once)."""
        ones = np.ones((1, len(labels)))
        return {k: float(v[0]) for k, v in self.weighted(scores, decisions, labels, ones).items()}

    def answer_changed(self, model: Any, base: np.ndarray, nudged: np.ndarray) -> np.ndarray:
        """Per row, whether a small nudge of the inputs (``base`` -> ``nudged`` scores) changed
        what the model answers: its decision."""
        return self.decisions(model, base) != self.decisions(model, nudged)


def _json(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
