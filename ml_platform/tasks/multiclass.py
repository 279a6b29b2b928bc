"""Multiclass classification: a probability per declared class and the likeliest class.

The classes are declared in the spec (``model.classes``, in the order the outputs list them).
Outputs: ``predicted_class`` (the likeliest class), ``probability`` (its probability: the task's
score, which prediction drift and shadow scores follow) and ``probability_<class>`` per class. A
class the training rows never hold gets probability 0. Labels are the class names as text.

Metrics: accuracy, macro F1, log loss, the multiclass Brier score (sum over classes of the squared
error, 0 to 2) and one-vs-rest macro ROC-AUC, all comparable by the gate's paired bootstrap;
macro averages are over the classes the rows hold or predict (as scikit-learn's ``labels=None``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import polars as pl

from ml_platform.tasks import binary
from ml_platform.tasks.base import Metric, Output, Task
from ml_platform.tasks.classification import BinaryClassification

_EPS = 1e-15


class MulticlassClassification(Task):
    name = "multiclass_classification"
    score_output = "probability"
    decision_output = "predicted_class"
    estimators = BinaryClassification.estimators
    scaled = BinaryClassification.scaled
    metrics = (
        Metric("accuracy"),
        Metric("macro_f1"),
        Metric("roc_auc"),
        Metric("log_loss", higher_is_better=False),
        Metric("brier", higher_is_better=False),
    )
    default_selection_metric = "log_loss"
    trusted_types = BinaryClassification.trusted_types
    label_dtype = pl.String()

    def __init__(self, classes: tuple[str, ...] = ()) -> None:
        self.classes = tuple(classes)
        self.outputs = (
            Output("predicted_class", "BYTES", "the likeliest class"),
            Output("probability", "FP64", "of the predicted class"),
            *(Output(f"probability_{c}", "FP64", f"of class {c}") for c in self.classes),
        )

    def for_spec(self, spec: Any) -> MulticlassClassification:
        return _with_classes(tuple(spec.model.classes))

    # --- labels ------------------------------------------------------------------------

    def parse_labels(self, text: pl.Expr) -> pl.Expr:
        name = text.cast(pl.String).str.strip_chars()
        return pl.when(name.is_in(list(self.classes))).then(name)

    def label_rule(self) -> str:
        return f"one of the classes {', '.join(self.classes)}"

    def json_label(self, value: Any) -> str | None:
        return value if isinstance(value, str) and value in self.classes else None

    def label_statistic(self, labels: pl.Expr) -> tuple[str, pl.Expr]:
        return "label_classes", labels.n_unique().cast(pl.Float64)

    def unusable_labels(self, labels: np.ndarray) -> str | None:
        if len(labels) == 0:
            return "no labelled row"
        found = sorted(set(labels.tolist()))
        if len(found) < 2:
            return f"{len(labels)} labelled rows, all of class {found[0]}; at least two classes are needed"
        return None

    # --- scoring -----------------------------------------------------------------------

    def scores(self, model: Any, features: Any) -> np.ndarray:
        """Rows x declared classes: each row's probability of each class."""
        probabilities = model.predict_proba(features)
        full = np.zeros((len(probabilities), len(self.classes)))
        full[:, [self.classes.index(str(c)) for c in model.classes_]] = probabilities
        return full

    def score_values(self, scores: np.ndarray) -> np.ndarray:
        return scores.max(axis=1)

    def decisions(self, model: Any, scores: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[scores.argmax(axis=1)]

    def columns(self, model: Any, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "predicted_class": self.decisions(model, scores),
            "probability": self.score_values(scores),
            **{f"probability_{c}": scores[:, i] for i, c in enumerate(self.classes)},
        }

    def logged_scores(self, logged: pl.DataFrame) -> np.ndarray:
        return np.column_stack([logged[f"probability_{c}"].to_numpy().astype(float) for c in self.classes])

    # --- metrics -----------------------------------------------------------------------

    def _one_hot(self, labels: np.ndarray) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        found = np.zeros((len(labels), len(self.classes)))
        found[np.arange(len(labels)), [index[str(label)] for label in labels]] = 1.0
        return found

    def evaluate(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None
    ) -> dict[str, float]:
        if not len(labels):
            return {"rows": 0.0}
        found = self.unweighted(scores, decisions, labels)
        shares = self._one_hot(labels).mean(axis=0)
        return {
            "rows": float(len(labels)),
            **{f"label_share/{c}": float(s) for c, s in zip(self.classes, shares, strict=True)},
            **{k: v for k, v in found.items() if not np.isnan(v)},
        }

    def weighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        truth = self._one_hot(labels)
        predicted = self._one_hot(decisions if decisions is not None else self.decisions(None, scores))
        total = weights.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        clipped = np.clip((scores * truth).sum(axis=1), _EPS, 1.0)
        tp = weights @ (truth * predicted)
        fp = weights @ ((1 - truth) * predicted)
        fn = weights @ (truth * (1 - predicted))
        present = (tp + fp + fn) > 0
        f1 = binary.ratio(2 * tp, 2 * tp + fp + fn)
        aucs = np.column_stack(
            [
                binary.weighted_ranking(scores[:, i], truth[:, i], weights)["roc_auc"]
                for i in range(truth.shape[1])
            ]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            macro_f1 = np.where(present.any(axis=1), (f1 * present).sum(axis=1) / present.sum(axis=1), np.nan)
            roc_auc = np.where(
                np.isfinite(aucs).any(axis=1), np.nansum(aucs, axis=1) / np.isfinite(aucs).sum(axis=1), np.nan
            )
        empty = total <= 0
        return {
            "accuracy": np.where(empty, np.nan, weights @ (truth * predicted).sum(axis=1) / safe),
            "macro_f1": macro_f1,
            "roc_auc": roc_auc,
            "log_loss": np.where(empty, np.nan, weights @ -np.log(clipped) / safe),
            "brier": np.where(empty, np.nan, weights @ ((scores - truth) ** 2).sum(axis=1) / safe),
        }

    def diagnostics(self, scores: np.ndarray, labels: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        """The confusion matrix: per labelled class, how many rows were predicted as each class."""
        truth = self._one_hot(labels)
        predicted = self._one_hot(self.decisions(None, scores))
        counts = truth.T @ predicted
        return {
            "confusion_matrix": [
                {"label": c, **{f"predicted_{d}": int(counts[i, j]) for j, d in enumerate(self.classes)}}
                for i, c in enumerate(self.classes)
            ]
        }


@cache
def _with_classes(classes: tuple[str, ...]) -> MulticlassClassification:
    return MulticlassClassification(classes)
