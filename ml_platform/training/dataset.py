"""Training sets: recent feature rows, labelled from anomaly windows or per-event labels, split by time."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.features.point_in_time import point_in_time_join
from ml_platform.ingestion.labels import LABEL
from ml_platform.spec import EventLabels, UseCaseSpec
from ml_platform.tasks import task_of

SPLIT = "split"
WINDOW = "anomaly_window"
# Rows whose labels have not arrived: neither negatives nor positives, so never validated or tested on.
UNLABELLED = "unlabelled"


def _window_labels(keyed: pl.DataFrame, windows: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    if windows.is_empty():
        return keyed.with_columns(pl.lit(0, pl.Int8).alias(LABEL), pl.lit(None, pl.String).alias(WINDOW))
    hits = (
        keyed.join(windows, on=spec.entity)
        .filter(pl.col(EVENT_TIMESTAMP).is_between(pl.col("start"), pl.col("end")))
        .group_by("_row")
        .agg(pl.format("{}@{}", pl.col(spec.entity), pl.col("start")).min().alias(WINDOW))
    )
    return keyed.join(hits, on="_row", how="left").with_columns(
        pl.col(WINDOW).is_not_null().cast(pl.Int8).alias(LABEL)
    )


def _event_labels(
    keyed: pl.DataFrame, labels: pl.DataFrame, spec: UseCaseSpec, now: dt.datetime
) -> pl.DataFrame:
    joined = keyed.join(
        labels.select(spec.entity, pl.col(EVENT_TIMESTAMP).cast(pl.Datetime("us", "UTC")), LABEL),
        on=[spec.entity, EVENT_TIMESTAMP],
        how="left",
        maintain_order="left",
    )
    if spec.labels.missing == "negative":
        # Once the lateness has passed, no label means a negative. Before, a label is not known
        # yet whatever arrived: only positives arrive early, and counting them alone would make
        # recent data look all positive.
        matured = pl.col(EVENT_TIMESTAMP) <= now - spec.monitoring.label_lateness
        joined = joined.with_columns(pl.when(matured).then(pl.col(LABEL).fill_null(0)).alias(LABEL))
    return joined.with_columns(pl.lit(None, pl.String).alias(WINDOW))


def label_rows(
    rows: pl.DataFrame,
    labels: pl.DataFrame,
    spec: UseCaseSpec,
    labelled_days: list[dt.date] | None = None,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """``label`` per row (1 or 0, or the task's value; null while it is not known) and
    ``anomaly_window`` (an id of the row's window, for window-level recall; null outside windows
    and for event labels).

    ``labels`` is what ``ingestion.labels.read_labels`` gives for the spec's kind. With anomaly
    windows, a row inside a window of its entity is 1, any other is 0, and a row of a day not in
    ``labelled_days`` (when given) is null. With event labels, a row takes its event's label; one
    without is null, or 0 once ``label_lateness`` has passed at ``now`` if the spec says so."""
    keyed = rows.select(spec.entity, pl.col(EVENT_TIMESTAMP).cast(pl.Datetime("us", "UTC"))).with_row_index(
        "_row"
    )
    if isinstance(spec.labels, EventLabels):
        found = _event_labels(keyed, labels, spec, now or dt.datetime.now(dt.UTC))
    else:
        found = _window_labels(keyed, labels, spec)
        if labelled_days is not None:
            covered = pl.col(EVENT_TIMESTAMP).dt.date().is_in(labelled_days)
            found = found.with_columns(pl.when(covered).then(pl.col(LABEL)).alias(LABEL))
    return found.sort("_row").select(
        pl.col(LABEL).cast(task_of(spec).label_dtype), pl.col(WINDOW).cast(pl.String)
    )


def split_boundaries(timestamps: pl.Series, validation_fraction: float, test_fraction: float):
    """Event times where validation and test begin: consecutive windows, test last."""
    first, last = timestamps.min(), timestamps.max()
    span = last - first
    test_from = first + span * (1 - test_fraction)
    validation_from = first + span * (1 - test_fraction - validation_fraction)
    return validation_from, test_from


def recent_window(spine: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The spine's rows counted back from its newest row: the last ``training_days`` days, or the
    newest ``training_rows`` rows when the spec gives a count."""
    ordered = spine.sort(spec.timestamp, spec.entity)
    if spec.model.training_rows is not None:
        return ordered.tail(spec.model.training_rows)
    newest = spine[spec.timestamp].max()
    return ordered.filter(pl.col(spec.timestamp) > newest - dt.timedelta(days=spec.model.training_days))


def training_window(spine: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The recent window's rows and, with ``min_entity_rows``, each entity's newest rows up to
    that many, older ones included (they only ever train: validation and test are cut from the
    recent window, so a sparse entity's history does not stretch them back)."""
    window = recent_window(spine, spec)
    if spec.model.min_entity_rows is None:
        return window
    ordered = spine.sort(spec.timestamp, spec.entity)
    history = ordered.group_by(spec.entity, maintain_order=True).tail(spec.model.min_entity_rows)
    return (
        pl.concat([window, history.select(window.columns)])
        .unique(subset=[spec.entity, spec.timestamp], keep="first")
        .sort(spec.timestamp, spec.entity)
    )


def build_training_set(
    spine: pl.DataFrame,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    spec: UseCaseSpec,
    labelled_days: list[dt.date] | None = None,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """Training rows for the spine's (entity, timestamp) pairs of the training window: features as
    known at each timestamp (point-in-time), labels, and a split by time into train, validation
    and test windows.

    A row whose label is not known (``label_rows``: a day whose windows have not arrived, an event
    without its label yet) has a null label, and the windows are cut from the rows up to the newest
    labelled one: the test window is the most recent *labelled* data, and a row whose label is still
    to come is ``unlabelled`` (never a negative). Validation and test are cut from the recent
    window (``recent_window``); an entity's older rows kept by ``min_entity_rows`` train.
    """
    window = training_window(spine, spec)
    joined = point_in_time_join(window, features, spec.entity, spec.timestamp, ttl=spec.features.ttl)
    rows = (
        joined.rename({spec.timestamp: EVENT_TIMESTAMP})
        .select(spec.entity, EVENT_TIMESTAMP, *spec.features.feature_names())
        .sort(spec.entity, EVENT_TIMESTAMP)
    )
    found = label_rows(rows, labels, spec, labelled_days, now)
    frame = pl.concat([rows, found], how="horizontal").with_columns(
        pl.col(LABEL).is_not_null().alias("_covered")
    )
    labelled = frame.filter("_covered")[EVENT_TIMESTAMP]
    if labelled.is_empty():
        return frame.with_columns(pl.lit(UNLABELLED).alias(SPLIT)).drop("_covered")
    judged = frame.filter(pl.col(EVENT_TIMESTAMP) <= labelled.max())
    recent = judged.filter(pl.col(EVENT_TIMESTAMP) >= recent_window(spine, spec)[spec.timestamp].min())
    validation_from, test_from = split_boundaries(
        (judged if recent.is_empty() else recent)[EVENT_TIMESTAMP],
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
