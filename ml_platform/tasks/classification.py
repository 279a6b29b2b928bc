"""Binary classification: a probability of the positive class per row, and the class at a threshold
chosen on the validation rows for the spec's objective.

Outputs: ``probability`` and ``predicted_label`` (1 when the probability reaches the threshold).
The threshold travels inside the artifact (scikit-learn's ``FixedThresholdClassifier`` around the
pipeline), so serving, batch scoring and evaluation decide alike.

Threshold objectives (``model.threshold_objective``): ``f1`` (the threshold of the best F1),
``recall_at_precision`` (the best recall whose precision is at least ``model.threshold_floor``)
and ``precision_at_recall`` (the best precision whose recall is at least the floor). When no
threshold meets the floor, the best-F1 threshold is taken and that is recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml_platform.tasks import binary
from ml_platform.tasks.base import Estimator, Metric, Output, Task

THRESHOLD_OBJECTIVES = ("f1", "recall_at_precision", "precision_at_recall")
_EPS = 1e-15
CALIBRATION_BINS = 10


def choose_threshold(
    probabilities: np.ndarray, labels: np.ndarray, objective: str, floor: float
) -> tuple[float, str]:
    """The threshold for ``objective`` on these rows and how it was chosen."""
    labels = np.asarray(labels).astype(int)
    if labels.sum() == 0:
        return 0.5, "0.5: the validation rows hold no positive label"
    candidates = np.unique(probabilities)
    decided = probabilities[None, :] >= candidates[:, None]
    tp = (decided & (labels == 1)).sum(axis=1).astype(float)
    fp = (decided & (labels == 0)).sum(axis=1).astype(float)
    fn = labels.sum() - tp
    precision = binary.ratio(tp, tp + fp)
    recall = binary.ratio(tp, tp + fn)
    f1 = binary.ratio(2 * tp, 2 * tp + fp + fn)
    best_f1 = _best(f1, np.ones(len(f1), dtype=bool))
    if objective == "f1":
        return float(candidates[best_f1]), f"best F1 on validation ({f1[best_f1]:.3f})"
    aim, bound = (recall, precision) if objective == "recall_at_precision" else (precision, recall)
    allowed = bound >= floor
    if not allowed.any():
        return (
            float(candidates[best_f1]),
            f"best F1 on validation ({f1[best_f1]:.3f}): no threshold reached {objective} floor {floor}",
        )
    index = _best(aim, allowed)
    return float(candidates[index]), f"{objective} >= {floor} on validation ({aim[index]:.3f})"


def _best(values: np.ndarray, allowed: np.ndarray) -> int:
    """The index of the best allowed value; of ties, the highest threshold (fewest positives)."""
    indexes = np.flatnonzero(allowed)
    best = values[indexes].max()
    return int(indexes[values[indexes] == best][-1])


class BinaryClassification(binary.ZeroOneLabels, Task):
    name = "binary_classification"
    outputs = (
        Output("probability", "FP64", "of the positive class (label 1)"),
        Output("predicted_label", "INT64", "1 when the probability reaches the chosen threshold"),
    )
    score_output = "probability"
    decision_output = "predicted_label"
    estimators = {
        "logistic_regression": Estimator(
            "logistic_regression",
            "sklearn.linear_model.LogisticRegression",
            defaults={"max_iter": 1000},
            search_space={"C": (0.1, 1.0, 10.0), "class_weight": (None, "balanced")},
        ),
        "random_forest": Estimator(
            "random_forest",
            "sklearn.ensemble.RandomForestClassifier",
            defaults={"n_jobs": 1, "n_estimators": 200},
            search_space={"max_depth": (None, 8, 16), "min_samples_leaf": (1, 5, 20)},
        ),
        "hist_gradient_boosting": Estimator(
            "hist_gradient_boosting",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            search_space={"learning_rate": (0.05, 0.1, 0.2), "max_leaf_nodes": (15, 31, 63)},
        ),
    }
    scaled = frozenset({"logistic_regression"})
    metrics = (
        Metric("roc_auc"),
        Metric("average_precision"),
        Metric("log_loss", higher_is_better=False),
        Metric("brier", higher_is_better=False),
        Metric("precision"),
        Metric("recall"),
        Metric("f1"),
        Metric("calibration_error", higher_is_better=False, comparable=False),
    )
    default_selection_metric = "average_precision"
    trusted_types = (
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    )

    def unusable_labels(self, labels: np.ndarray) -> str | None:
        if len(labels) == 0:
            return "no labelled row"
        positives = int(np.sum(labels == 1))
        if positives == 0 or positives == len(labels):
            return f"{len(labels)} labelled rows, all of class {int(labels[0])}; both classes are needed"
        return None

    def finalize(
        self,
        pipeline: Any,
        train: Any,
        train_labels: np.ndarray,
        valid: Any,
        valid_labels: np.ndarray,
        spec: Any,
    ) -> tuple[Any, dict[str, Any]]:
        from sklearn.base import clone
        from sklearn.model_selection import FixedThresholdClassifier

        probabilities = pipeline.predict_proba(valid)[:, 1]
        threshold, how = choose_threshold(
            probabilities, valid_labels, spec.model.threshold_objective, spec.model.threshold_floor
        )
        model = FixedThresholdClassifier(
            clone(pipeline), threshold=threshold, response_method="predict_proba"
        )
        return model.fit(train, train_labels), {"threshold": threshold, "threshold_chosen_by": how}

    def scores(self, model: Any, features: Any) -> np.ndarray:
        return model.predict_proba(features)[:, 1]

    def decisions(self, model: Any, scores: np.ndarray) -> np.ndarray:
        return scores >= threshold_of(model)

    def columns(self, model: Any, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "probability": scores.astype(float),
            "predicted_label": self.decisions(model, scores).astype(np.int64),
        }

    def evaluate(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None
    ) -> dict[str, float]:
        labels = np.asarray(labels).astype(int)
        decided = np.asarray(decisions).astype(int)
        clipped = np.clip(scores, _EPS, 1 - _EPS)
        found = {
            "rows": float(len(labels)),
            "positive_share": float(labels.mean()) if len(labels) else 0.0,
            "predicted_positive_share": float(decided.mean()) if len(labels) else 0.0,
            **binary.threshold_metrics(decided, labels),
            **binary.ranking_metrics(scores, labels),
        }
        if len(labels):
            found["calibration_error"] = calibration_error(calibration(scores, labels))
            found["brier"] = float(np.mean((scores - labels) ** 2))
            found["log_loss"] = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        return found

    def diagnostics(self, scores: np.ndarray, labels: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        return {"calibration": calibration(scores, np.asarray(labels).astype(int))}

    def weighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        y = np.asarray(labels).astype(float)
        clipped = np.clip(scores, _EPS, 1 - _EPS)
        total = weights.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        losses = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
        return {
            **binary.weighted_ranking(scores, labels, weights),
            **binary.weighted_at_threshold(decisions, labels, weights),
            "brier": np.where(total > 0, weights @ ((scores - y) ** 2) / safe, np.nan),
            "log_loss": np.where(total > 0, weights @ losses / safe, np.nan),
        }


def threshold_of(model: Any) -> float:
    """The decision threshold an artifact carries (0.5 for a bare classifier)."""
    return float(getattr(model, "threshold", 0.5))


def calibration_error(rows: list[dict[str, float]]) -> float:
    """Expected calibration error: the row-weighted gap between predicted and observed shares."""
    total = sum(r["rows"] for r in rows)
    if not total:
        return 0.0
    return sum(r["rows"] * abs(r["mean_probability"] - r["positive_share"]) for r in rows) / total


def calibration(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Per probability bin with rows: the mean predicted probability and the observed positive share."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin": f"[{edges[b]:.1f}, {edges[b + 1]:.1f})",
                    "rows": int(mask.sum()),
                    "mean_probability": float(scores[mask].mean()),
                    "positive_share": float(np.asarray(labels)[mask].mean()),
                }
            )
    return rows
