"""The anomaly detector's documented default against the plain baseline users would try first:
an IsolationForest on the value, its 12-reading mean and their difference, fit on the same rows
and scored on the same test rows, entity by entity (``bench/anomaly.py`` prints the figures)."""

import importlib.util
import statistics
import warnings
from pathlib import Path

import pytest

_BENCH = Path(__file__).parents[1] / "bench" / "anomaly.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("anomaly_bench", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median(scores: dict, metric: str) -> float:
    return statistics.median(entity[metric] for entity in scores.values())


@pytest.mark.parametrize("data", ["demo", "recordings"])
def test_the_shipped_features_rank_anomalies_better_than_the_plain_baseline(bench, data):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping features without any observed values")
        found = bench.compare(data)
    mine, theirs = found["shipped"]
    assert set(mine) == set(theirs) and len(mine) >= 4  # every series with anomalies in its test rows
    for metric in ("roc_auc", "average_precision"):
        assert _median(mine, metric) >= _median(theirs, metric), metric
    # On every entity, the anomalies ours ranks first are more often real (average precision).
    assert [e for e in mine if mine[e]["average_precision"] < theirs[e]["average_precision"]] == []
    if data == "recordings":
        # Series of other levels and spreads: the entity-relative z-scores are what lifts it.
        without, _ = found["without_zscores"]
        assert _median(mine, "average_precision") > _median(without, "average_precision") + 0.1
