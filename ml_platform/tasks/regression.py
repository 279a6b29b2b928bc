"""Regression: a number per row. Output: ``prediction``. Labels are numbers (a file or a post
writes them as text: ``12.5``, ``-3``, ``1e3``).

The gate's paired bootstrap draws rows with replacement (there are no events); a scope is judged
when it holds at least ``gate.min_positive_events`` labelled rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ml_platform.tasks.base import Estimator, Metric, Output, Task

# Behaviour: a nudge of the inputs "changes the answer" when the prediction moves by more than
# this share of the predictions' spread (a tree's step over one unit of an integer input is less).
CHANGE_SHARE_OF_SPREAD = 0.1


class Regression(Task):
    name = "regression"
    outputs = (Output("prediction", "FP64", "the predicted value"),)
    score_output = "prediction"
    estimators = {
        "ridge": Estimator(
            "ridge", "sklearn.linear_model.Ridge", search_space={"alpha": (0.1, 1.0, 10.0)}, seeded=False
        ),
        "random_forest": Estimator(
            "random_forest",
            "sklearn.ensemble.RandomForestRegressor",
            defaults={"n_jobs": 1, "n_estimators": 200},
            search_space={"max_depth": (None, 8, 16), "min_samples_leaf": (1, 5, 20)},
        ),
        "hist_gradient_boosting": Estimator(
            "hist_gradient_boosting",
            "sklearn.ensemble.HistGradientBoostingRegressor",
            search_space={"learning_rate": (0.05, 0.1, 0.2), "max_leaf_nodes": (15, 31, 63)},
        ),
    }
    scaled = frozenset({"ridge"})
    metrics = (
        Metric("mae", higher_is_better=False),
        Metric("rmse", higher_is_better=False),
        Metric("r2"),
    )
    default_selection_metric = "rmse"
    trusted_types = (
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    )

    def parse_labels(self, text: pl.Expr) -> pl.Expr:
        number = text.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        return pl.when(number.is_finite()).then(number)

    def label_rule(self) -> str:
        return "a finite number"

    def json_label(self, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            return None
        return float(value)

    def scores(self, model: Any, features: Any) -> np.ndarray:
        return np.asarray(model.predict(features), dtype=float)

    def columns(self, model: Any, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {"prediction": scores.astype(float)}

    def evaluate(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None
    ) -> dict[str, float]:
        if not len(labels):
            return {"rows": 0.0}
        return {
            "rows": float(len(labels)),
            "label_mean": float(np.mean(labels)),
            "prediction_mean": float(np.mean(scores)),
            **self.unweighted(scores, None, labels),
        }

    def weighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        y = np.asarray(labels, dtype=float)
        error = np.asarray(scores, dtype=float) - y
        total = weights.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        mean_y = (weights @ y) / safe
        squared = weights @ error**2
        spread = weights @ y**2 - safe * mean_y**2  # sum of w (y - mean)^2
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(spread > 0, 1 - squared / spread, np.nan)
        return {
            "mae": np.where(total > 0, (weights @ np.abs(error)) / safe, np.nan),
            "rmse": np.where(total > 0, np.sqrt(squared / safe), np.nan),
            "r2": np.where(total > 0, r2, np.nan),
        }

    def answer_changed(self, model: Any, base: np.ndarray, nudged: np.ndarray) -> np.ndarray:
        """A prediction "changes" when it moves by more than a share of the predictions' spread."""
        return np.abs(nudged - base) > CHANGE_SHARE_OF_SPREAD * float(np.std(base))
