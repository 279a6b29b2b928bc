"""Scoring a fitted pipeline without scikit-learn's per-call overhead, for the rows serving sees.

For one row, scikit-learn's IsolationForest spends nearly all of its time around the arithmetic:
input validation, a joblib dispatch and one ``tree.apply`` call per tree (200 of them). Walking every
tree at once in numpy, from the fitted trees' own arrays, gives the same scores in a fraction of
that time. Only pipelines made of the steps known here are compiled, and only when their scores on
seeded probe rows (with missing values) equal scikit-learn's to ``TOLERANCE``; anything else is
scored by scikit-learn, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOLERANCE = 1e-9
PROBE_ROWS = 512
# Past this many rows scikit-learn's per-tree calls cost less than the walk's (rows x trees) arrays.
MAX_ROWS = 256


class CompiledIsolationForest:
    """``decision_function`` of an imputer / scaler / IsolationForest pipeline on a float array
    (rows x features, NaN for a missing value), the arithmetic scikit-learn does in its order."""

    def __init__(self, pipeline: Any, names: tuple[str, ...]) -> None:
        from sklearn.ensemble._iforest import _average_path_length

        self.pipeline, self.names = pipeline, list(names)
        self.fill: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        for _, step in pipeline.steps[:-1]:
            if hasattr(step, "statistics_"):
                self.fill = np.asarray(step.statistics_, dtype=float)
            else:
                self.mean = step.mean_ if step.with_mean else None
                self.scale = step.scale_ if step.with_std else None
        forest = pipeline.steps[-1][1]
        self.offset = float(forest.offset_)
        trees = forest.estimators_
        sizes = [t.tree_.node_count for t in trees]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = starts.astype(np.intp)
        features, thresholds, left, right, values = [], [], [], [], []
        for i, (tree, start) in enumerate(zip(trees, starts, strict=True)):
            t = tree.tree_
            leaf = t.children_left < 0
            nodes = np.arange(t.node_count) + start
            # A leaf points at itself, so every row can take the same number of steps.
            left.append(np.where(leaf, nodes, t.children_left + start))
            right.append(np.where(leaf, nodes, t.children_right + start))
            local = np.where(leaf, 0, t.feature)
            features.append(np.asarray(forest.estimators_features_[i])[local])
            thresholds.append(np.where(leaf, np.inf, t.threshold))
            values.append(forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0)
        self.features, self.thresholds = np.concatenate(features), np.concatenate(thresholds)
        self.left, self.right, self.values = map(np.concatenate, (left, right, values))
        self.steps = max(t.tree_.max_depth for t in trees)
        self.denominator = len(trees) * float(_average_path_length([forest._max_samples])[0])

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) > MAX_ROWS:
            return self.pipeline.decision_function(pd.DataFrame(rows, columns=self.names))
        x = np.array(rows, dtype=float)
        if self.fill is not None:
            x = np.where(np.isnan(x), self.fill, x)
        if self.mean is not None:
            x -= self.mean
        if self.scale is not None:
            x /= self.scale
        if np.isnan(x).any():  # what the trees do with a missing value is scikit-learn's to say
            return self.pipeline.decision_function(pd.DataFrame(rows, columns=self.names))
        # The trees compare float32 inputs (scikit-learn's input type for them) with float64 thresholds.
        x = x.astype(np.float32).astype(float)
        nodes = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        row = np.arange(len(x))[:, None]
        for _ in range(self.steps):
            go_left = x[row, self.features[nodes]] <= self.thresholds[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        depths = self.values[nodes].sum(axis=1)
        scores = 2.0 ** (-depths / self.denominator) if self.denominator else np.ones(len(x))
        return -scores - self.offset


def _compilable(pipeline: Any) -> bool:
    from sklearn.ensemble import IsolationForest
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if type(pipeline) is not Pipeline or type(pipeline.steps[-1][1]) is not IsolationForest:
        return False
    for _, step in pipeline.steps[:-1]:
        if type(step) is SimpleImputer:
            if step.add_indicator or np.isnan(np.asarray(step.statistics_, dtype=float)).any():
                return False  # a column added or dropped: not the plain fill done here
        elif type(step) is not StandardScaler:
            return False
    forest = pipeline.steps[-1][1]
    return all(hasattr(forest, a) for a in ("_decision_path_lengths", "_average_path_length_per_tree"))


def probe_rows(center: np.ndarray, seed: int = 0) -> np.ndarray:
    """Seeded rows around ``center`` (the training data's fill values), a tenth of the values missing."""
    rng = np.random.default_rng(seed)
    spread = np.abs(center) + 1.0
    rows = center + rng.normal(size=(PROBE_ROWS, len(center))) * spread * 3.0
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return np.vstack([np.zeros((1, len(center))), rows])


def compile_model(task: Any, pipeline: Any, names: tuple[str, ...]) -> CompiledIsolationForest | None:
    """The compiled form of ``pipeline`` when it is one this module knows and its scores on probe
    rows equal scikit-learn's (``task.scores`` of both); None otherwise."""
    if not _compilable(pipeline):
        return None
    compiled = CompiledIsolationForest(pipeline, names)
    rows = probe_rows(compiled.fill if compiled.fill is not None else np.zeros(len(names)))
    expected = task.scores(pipeline, pd.DataFrame(rows, columns=list(names)))
    got = task.scores(compiled, rows)
    return compiled if np.allclose(got, expected, rtol=0, atol=TOLERANCE) else None
