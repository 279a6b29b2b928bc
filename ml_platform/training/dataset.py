"""Training sets: recent feature rows labelled from anomaly windows, split by time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.features.point_in_time import point_in_time_join
from ml_platform.spec import UseCaseSpec

LABEL = "label"
SPLIT = "split"


def read_label_windows(labels_dir: Path, spec: UseCaseSpec) -> pl.DataFrame:
    """All anomaly windows (entity, start, end) from the labels folder; empty when there is none."""
    schema = {
        spec.entity: pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
    }
    files = sorted(labels_dir.glob("*.csv")) if labels_dir.is_dir() else []
    if not files:
        return pl.DataFrame(schema=schema)
    frames = [pl.read_csv(f, infer_schema=False) for f in files]
    return (
        pl.concat(frames)
        .select(
            pl.col(spec.entity),
            pl.col("start").str.to_datetime(time_zone="UTC"),
            pl.col("end").str.to_datetime(time_zone="UTC"),
        )
        .unique()
        .cast(schema)
    )


def label_rows(features: pl.DataFrame, windows: pl.DataFrame, spec: UseCaseSpec) -> pl.Series:
    """1 where the row's event time falls inside an anomaly window of its entity, else 0."""
    if windows.is_empty():
        return pl.Series(LABEL, [0] * len(features), dtype=pl.Int8)
    keyed = features.select(spec.entity, EVENT_TIMESTAMP).with_row_index("_row")
    hits = (
        keyed.join(windows, on=spec.entity)
        .filter(pl.col(EVENT_TIMESTAMP).is_between(pl.col("start"), pl.col("end")))
        .select("_row")
        .unique()
    )
    return (
        keyed.join(hits.with_columns(hit=pl.lit(1, pl.Int8)), on="_row", how="left")
        .sort("_row")["hit"]
        .fill_null(0)
        .alias(LABEL)
    )


def time_split_boundary(timestamps: pl.Series, test_fraction: float) -> dt.datetime:
    """The event time from which rows are held out: the last ``test_fraction`` of the period."""
    first, last = timestamps.min(), timestamps.max()
    return first + (last - first) * (1 - test_fraction)


def build_training_set(
    spine: pl.DataFrame, features: pl.DataFrame, windows: pl.DataFrame, spec: UseCaseSpec
) -> pl.DataFrame:
    """Training rows for the spine's (entity, timestamp) pairs of the last ``training_days``:
    features as known at each timestamp (point-in-time), a label, and a train/test split by time.
    """
    newest = spine[spec.timestamp].max()
    recent = spine.filter(pl.col(spec.timestamp) > newest - dt.timedelta(days=spec.model.training_days))
    joined = point_in_time_join(recent, features, spec.entity, spec.timestamp, ttl=spec.features.ttl)
    rows = (
        joined.rename({spec.timestamp: EVENT_TIMESTAMP})
        .select(spec.entity, EVENT_TIMESTAMP, *spec.features.feature_names())
        .sort(spec.entity, EVENT_TIMESTAMP)
    )
    boundary = time_split_boundary(rows[EVENT_TIMESTAMP], spec.model.test_fraction)
    return rows.with_columns(
        label_rows(rows, windows, spec),
        pl.when(pl.col(EVENT_TIMESTAMP) < boundary)
        .then(pl.lit("train"))
        .otherwise(pl.lit("test"))
        .alias(SPLIT),
    )
