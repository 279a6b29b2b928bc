"""Training sets: recent feature rows labelled from anomaly windows, split by time."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.features.point_in_time import point_in_time_join
from ml_platform.spec import UseCaseSpec

LABEL = "label"
SPLIT = "split"
WINDOW = "anomaly_window"
# Rows whose labels have not arrived: neither negatives nor positives, so never validated or tested on.
UNLABELLED = "unlabelled"


def label_rows(features: pl.DataFrame, windows: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """``label`` (1 inside an anomaly window of the row's entity, else 0) and ``anomaly_window``
    (an id of that window, for window-level recall; null outside windows)."""
    keyed = features.select(spec.entity, EVENT_TIMESTAMP).with_row_index("_row")
    if windows.is_empty():
        return keyed.with_columns(
            pl.lit(0, pl.Int8).alias(LABEL), pl.lit(None, pl.String).alias(WINDOW)
        ).select(LABEL, WINDOW)
    hits = (
        keyed.join(windows, on=spec.entity)
        .filter(pl.col(EVENT_TIMESTAMP).is_between(pl.col("start"), pl.col("end")))
        .group_by("_row")
        .agg(pl.format("{}@{}", pl.col(spec.entity), pl.col("start")).min().alias(WINDOW))
    )
    return (
        keyed.join(hits, on="_row", how="left")
        .sort("_row")
        .select(pl.col(WINDOW).is_not_null().cast(pl.Int8).alias(LABEL), pl.col(WINDOW))
    )


def split_boundaries(timestamps: pl.Series, validation_fraction: float, test_fraction: float):
    """Event times where validation and test begin: consecutive windows, test last."""
    first, last = timestamps.min(), timestamps.max()
    span = last - first
    test_from = first + span * (1 - test_fraction)
    validation_from = first + span * (1 - test_fraction - validation_fraction)
    return validation_from, test_from


def build_training_set(
    spine: pl.DataFrame,
    features: pl.DataFrame,
    windows: pl.DataFrame,
    spec: UseCaseSpec,
    labelled_days: list[dt.date] | None = None,
) -> pl.DataFrame:
    """Training rows for the spine's (entity, timestamp) pairs of the last ``training_days``:
    features as known at each timestamp (point-in-time), labels, and a split by time into
    train, validation and test windows.

    With ``labelled_days`` (the days whose labels have arrived), a row of another day has a null
    label, and the windows are cut from the rows up to the newest labelled day: the test window is
    the most recent *labelled* data, and a row whose labels are still to come is ``unlabelled``
    (never a negative). Without it, every row counts as labelled.
    """
    newest = spine[spec.timestamp].max()
    recent = spine.filter(pl.col(spec.timestamp) > newest - dt.timedelta(days=spec.model.training_days))
    joined = point_in_time_join(recent, features, spec.entity, spec.timestamp, ttl=spec.features.ttl)
    rows = (
        joined.rename({spec.timestamp: EVENT_TIMESTAMP})
        .select(spec.entity, EVENT_TIMESTAMP, *spec.features.feature_names())
        .sort(spec.entity, EVENT_TIMESTAMP)
    )
    frame = pl.concat([rows, label_rows(rows, windows, spec)], how="horizontal")
    if labelled_days:
        covered = pl.col(EVENT_TIMESTAMP).dt.convert_time_zone("UTC").dt.date().is_in(labelled_days)
        frame = frame.with_columns(
            pl.when(covered).then(pl.col(LABEL)).alias(LABEL), covered.alias("_covered")
        )
    else:
        frame = frame.with_columns(pl.lit(True).alias("_covered"))
    labelled = frame.filter("_covered")[EVENT_TIMESTAMP]
    if labelled.is_empty():
        return frame.with_columns(pl.lit(UNLABELLED).alias(SPLIT)).drop("_covered")
    validation_from, test_from = split_boundaries(
        frame.filter(pl.col(EVENT_TIMESTAMP) <= labelled.max())[EVENT_TIMESTAMP],
        spec.model.validation_fraction,
        spec.model.test_fraction,
    )
    ts = pl.col(EVENT_TIMESTAMP)
    split = (
        pl.when(ts > labelled.max())
        .then(pl.lit(UNLABELLED))
        .when((ts >= validation_from) & ~pl.col("_covered"))
        .then(pl.lit(UNLABELLED))
        .when(ts >= test_from)
        .then(pl.lit("test"))
        .when(ts >= validation_from)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )
    return frame.with_columns(split.alias(SPLIT)).drop("_covered")
