"""Benchmark: how well the anomaly detector ranks labelled anomalies, entity by entity, against a
plain scikit-learn baseline trained on the same rows.

The peer is what a user would try first: ``IsolationForest(n_estimators=100, random_state=seed)``
on the value, its mean over the last 12 readings and the value minus that mean, fit on the same
training rows. Ours are the platform's own path: the spec's feature definitions computed by
``compute_features``, the training window and time split of ``build_training_set`` (anomaly
windows as labels), the task's pipeline (median imputation, scaling, IsolationForest with the
sensor spec's parameters) fit on the train rows. Every pipeline is scored on the same test rows.

Feature sets (ours):

* ``shipped``: the ``sensor_anomaly`` spec's features, the documented default for anomaly
  detection (values, rolling means, deviations and differences, a lag, the hour, and ``ZScore``
  of the value against its entity's own last 12, 72 and 288 readings);
* ``without_zscores``: the same without the three z-scores (the default before them).

Data:

* ``demo``: the ``sensor_anomaly`` generator (10 sensors, 14 days at 5 minutes, its anomaly
  windows), with the shipped spec's window (the last 7 days, split over all sensors together);
* ``recordings``: four seeded series unlike the demo, generated here: a machine temperature (5
  minutes, Dec 2013 - Feb 2014, slow failures), a CPU load (5 minutes, Feb 2014, bounded, heavy
  tailed, level jumps and a flat line), request counts (hourly, Jan - Apr 2015, up to about
  40,000, weekly pattern, spikes and drops) and an ambient temperature (hourly, Jul 2013 - May
  2014, seasonal, level shifts); a value column only; each series split by its own time
  (``min_entity_rows``: 4000), since the four were recorded over different periods.

Figures, per data set and feature set: the median over entities of the per-entity ROC-AUC and
of the per-entity average precision, ours / the peer's (``higher`` is better), and how many
entities ours ranks at least as well as the peer. Everything is seeded; one run gives the same
figures every time on the same library versions.

    .venv/bin/python bench/anomaly.py
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
import sys
import warnings

import numpy as np
import polars as pl
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from ml_platform.features.compute import EVENT_TIMESTAMP, compute_features
from ml_platform.features.definitions import ZScore
from ml_platform.spec import UseCaseSpec
from ml_platform.tasks import task_of
from ml_platform.training.dataset import LABEL, SPLIT, build_training_set
from ml_platform.training.evaluate import features_of
from ml_platform.usecases.sensor_anomaly import SPEC as SENSORS
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generate_day

SEED = 7
FIVE_MINUTES, HOUR = dt.timedelta(minutes=5), dt.timedelta(hours=1)
PEER_FEATURES = ("value", "value_mean_12", "value_diff_mean_12")
WITHOUT_ZSCORES = tuple(f for f in SENSORS.features.features if not isinstance(f, ZScore))


def log(message: str) -> None:
    print(f"[anomaly] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------


def demo_data() -> tuple[pl.DataFrame, pl.DataFrame]:
    config = SensorDataConfig(days=14, start=dt.date(2026, 1, 1), seed=42)
    frames, windows = [], []
    for offset in range(config.days):
        frame, found = generate_day(config.start + dt.timedelta(days=offset), config)
        frames.append(pl.from_pandas(frame))
        windows += found
    rows = pl.concat(frames).with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    )
    return rows, window_frame(windows)


def window_frame(windows: list[tuple[str, dt.datetime, dt.datetime]]) -> pl.DataFrame:
    moment = pl.Datetime("us", "UTC")
    schema = {"sensor_id": pl.String, "start": moment, "end": moment}
    return pl.DataFrame(windows, schema=schema, orient="row")


def _series(
    name: str, start: dt.datetime, step: dt.timedelta, values: np.ndarray, windows: list[tuple[int, int]]
) -> tuple[pl.DataFrame, list[tuple[str, dt.datetime, dt.datetime]]]:
    times = [start + step * i for i in range(len(values))]
    frame = pl.DataFrame({"sensor_id": name, "timestamp": times, "value": np.round(values, 3)}).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC")
    )
    labelled = [(name, times[a].replace(tzinfo=dt.UTC), times[b].replace(tzinfo=dt.UTC)) for a, b in windows]
    return frame, labelled


def _events(rng: np.random.Generator, n: int, count: int, length: tuple[int, int]) -> list[tuple[int, int]]:
    """``count`` non-overlapping event spans spread over the series, and one more in its last 3%
    (every series is tested on its newest rows)."""
    edges = [*np.linspace(0.1 * n, 0.95 * n, count).astype(int), int(0.965 * n), int(0.995 * n)]
    spans = []
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        size = int(rng.integers(*length))
        first = int(rng.integers(left, max(left + 1, right - size)))
        spans.append((first, first + size))
    return spans


def recordings() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(SEED)
    frames, windows = [], []

    # Machine temperature: 5 minutes, about 85 with a daily cycle and AR(1) noise; failures are
    # slow slides to 40-60 over hours and back.
    n = 79 * 288
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.95 * noise[i - 1] + rng.normal(0, 0.5)
    t = np.arange(n)
    value = 85 + 3 * np.sin(2 * np.pi * t / 288) + noise
    spans = _events(rng, n, 6, (36, 96))
    for a, b in spans:
        depth = rng.uniform(25, 45)
        value[a:b] -= depth * np.sin(np.pi * np.arange(b - a) / (b - a))
    frame, found = _series("machine_temperature", dt.datetime(2013, 12, 2), FIVE_MINUTES, value, spans)
    frames.append(frame)
    windows += found

    # CPU load: 5 minutes, bounded to 0-100, heavy tailed; anomalies are hours near 100 and a
    # flat line at 0.
    n = 14 * 288
    value = np.clip(35 + 8 * rng.standard_t(3, n) + 10 * np.sin(2 * np.pi * np.arange(n) / 288), 0, 100)
    spans = _events(rng, n, 5, (12, 36))
    for k, (a, b) in enumerate(spans):
        value[a:b] = 0.0 if k == 2 else np.clip(rng.normal(96, 2, b - a), 0, 100)
    frame, found = _series("cpu_utilization", dt.datetime(2014, 2, 14), FIVE_MINUTES, value, spans)
    frames.append(frame)
    windows += found

    # Requests: hourly, a weekly and daily pattern around 20,000 (up to about 40,000); spikes
    # and drops of a few hours.
    n = 120 * 24
    hours = np.arange(n)
    weekly = 1 + 0.25 * np.sin(2 * np.pi * hours / (24 * 7))
    daily = 1 + 0.45 * np.sin(2 * np.pi * (hours % 24 - 8) / 24)
    value = 20_000 * weekly * daily * (1 + rng.normal(0, 0.05, n))
    spans = _events(rng, n, 6, (2, 6))
    for k, (a, b) in enumerate(spans):
        value[a:b] *= 1.8 if k % 2 == 0 else 0.3
    frame, found = _series("requests", dt.datetime(2015, 1, 1), HOUR, value, spans)
    frames.append(frame)
    windows += found

    # Ambient temperature: hourly, seasonal 60-80 with a daily cycle; anomalies are level shifts
    # of 6-10 degrees for half a day to two days.
    n = 328 * 24
    hours = np.arange(n)
    seasons = 8 * np.sin(2 * np.pi * hours / (24 * 365))
    value = 70 + seasons + 2 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1, n)
    spans = _events(rng, n, 6, (12, 48))
    for a, b in spans:
        value[a:b] += rng.choice([-1, 1]) * rng.uniform(6, 10)
    frame, found = _series("ambient_temperature", dt.datetime(2013, 7, 4), HOUR, value, spans)
    frames.append(frame)
    windows += found
    return pl.concat(frames), window_frame(windows)


# --- pipelines ---------------------------------------------------------------------------------


def with_features(spec: UseCaseSpec, features: tuple) -> UseCaseSpec:
    return dataclasses.replace(spec, features=dataclasses.replace(spec.features, features=features))


def training_set(rows: pl.DataFrame, windows: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    # The recordings have no temperature nor vibration: the spec's optional columns stay empty, as
    # they do when such files land (the features over them are null; the imputer drops them).
    for column in ("temperature", "vibration"):
        if column not in rows.columns:
            rows = rows.with_columns(pl.lit(None, pl.Float64).alias(column))
    features = compute_features(rows, spec)
    spine = rows.select(spec.entity, spec.timestamp)
    return build_training_set(spine, features, windows, spec)


def ours(frame: pl.DataFrame, spec: UseCaseSpec) -> np.ndarray:
    task = task_of(spec)
    train = frame.filter(pl.col(SPLIT) == "train")
    pipeline = task.build("isolation_forest", spec.model.params, spec.model.seed)
    model = task.fit(pipeline, features_of(train, spec), None)
    return task.scores(model, features_of(frame.filter(pl.col(SPLIT) == "test"), spec))


def peer(frame: pl.DataFrame) -> np.ndarray:
    def matrix(split: str) -> np.ndarray:
        return frame.filter(pl.col(SPLIT) == split).select(PEER_FEATURES).fill_null(0.0).to_numpy()

    model = IsolationForest(n_estimators=100, random_state=SEED).fit(matrix("train"))
    return -model.decision_function(matrix("test"))


def per_entity(test: pl.DataFrame, scores: np.ndarray, entity: str) -> dict[str, dict[str, float]]:
    found = {}
    labels = test[LABEL].to_numpy().astype(int)
    for name in sorted(test[entity].unique()):
        rows = (test[entity] == name).to_numpy()
        if 0 < labels[rows].sum() < rows.sum():
            found[name] = {
                "roc_auc": float(roc_auc_score(labels[rows], scores[rows])),
                "average_precision": float(average_precision_score(labels[rows], scores[rows])),
                "test_rows": int(rows.sum()),
                "anomalous_rows": int(labels[rows].sum()),
            }
    return found


def figure(data: str, features: str, metric: str, mine: dict, theirs: dict) -> dict:
    entities = sorted(set(mine) & set(theirs))
    ours_median = statistics.median(mine[e][metric] for e in entities)
    peer_median = statistics.median(theirs[e][metric] for e in entities)
    return {
        "bench": "anomaly",
        "figure": f"{metric}_median_per_entity_{data}_{features}",
        "ours": round(ours_median, 4),
        "peer": "sklearn_isolation_forest_value_mean12_diff12",
        "peer_value": round(peer_median, 4),
        "ratio": round(ours_median / peer_median, 4),
        "better": "higher",
        "entities": len(entities),
        "entities_at_least_peer": sum(mine[e][metric] >= theirs[e][metric] for e in entities),
        "per_entity": {e: [round(mine[e][metric], 3), round(theirs[e][metric], 3)] for e in entities},
    }


DATA_SETS = {
    "demo": (demo_data, SENSORS),
    "recordings": (
        recordings,
        dataclasses.replace(SENSORS, model=dataclasses.replace(SENSORS.model, min_entity_rows=4000)),
    ),
}
Scores = dict[str, dict[str, float]]


def compare(data: str) -> dict[str, tuple[Scores, Scores]]:
    """Per feature set, ours and the peer's per-entity figures on one data set's test rows."""
    load, base = DATA_SETS[data]
    rows, windows = load()
    log(f"{data}: {len(rows)} rows, {rows[base.entity].n_unique()} series, {len(windows)} windows")
    peer_frame = training_set(rows, windows, base)
    peer_test = peer_frame.filter(pl.col(SPLIT) == "test")
    theirs = per_entity(peer_test, peer(peer_frame), base.entity)
    found = {}
    for features, spec in {"shipped": base, "without_zscores": with_features(base, WITHOUT_ZSCORES)}.items():
        frame = training_set(rows, windows, spec)
        test = frame.filter(pl.col(SPLIT) == "test")
        keys = peer_test.select(base.entity, EVENT_TIMESTAMP)
        assert test.select(base.entity, EVENT_TIMESTAMP).equals(keys), "not the peer's test rows"
        found[features] = (per_entity(test, ours(frame, spec), base.entity), theirs)
    return found


def main() -> None:
    warnings.filterwarnings("ignore", message="Skipping features without any observed values")
    for data in DATA_SETS:
        for features, (mine, theirs) in compare(data).items():
            for metric in ("roc_auc", "average_precision"):
                print(json.dumps(figure(data, features, metric, mine, theirs)), flush=True)


if __name__ == "__main__":
    main()
