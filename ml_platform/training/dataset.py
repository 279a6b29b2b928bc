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


def training_window(spine: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The spine's rows counted back from its newest row: the last ``training_days`` days, or the
    newest ``training_rows`` rows when the spec gives a count; with ``min_entity_rows``, each
    entity's newest rows up to that many besides, older ones included."""
    ordered = spine.sort(spec.timestamp, spec.entity)
    if spec.model.training_rows is not None:
        window = ordered.tail(spec.model.training_rows)
    else:
        newest = spine[spec.timestamp].max()
        window = ordered.filter(pl.col(spec.timestamp) > newest - dt.timedelta(days=spec.model.training_days))
    if spec.model.min_entity_rows is None:
        return window
    history = ordered.group_by(spec.entity, maintain_order=True).tail(spec.model.min_entity_rows)
    return (
        pl.concat([window, history.select(window.columns)])
        .unique(subset=[spec.entity, spec.timestamp], keep="first")
        .sort(spec.timestamp, spec.entity)
    )


def _with_split(frame: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """Train, validation and test as consecutive windows in time, test last, cut from the rows up
    to the newest labelled one: over all entities together, or, with ``min_entity_rows``, over
    each entity's own rows (entities recorded over different periods are each tested on their
    newest rows). Rows after the newest labelled one, and unlabelled rows from validation on, are
    ``unlabelled``."""
    ts, model = pl.col(EVENT_TIMESTAMP), spec.model
    group = pl.col(spec.entity) if model.min_entity_rows is not None else pl.lit(0)
    framed = frame.with_columns(ts.filter(pl.col("_covered")).max().over(group).alias("_labelled_until"))
    labelled_until = pl.col("_labelled_until")
    first = ts.filter(ts <= labelled_until).min().over(group)
    span = labelled_until - first
    validation_from = first + span * (1 - model.test_fraction - model.validation_fraction)
    test_from = first + span * (1 - model.test_fraction)
    split = (
        pl.when(labelled_until.is_null() | (ts > labelled_until))
        .then(pl.lit(UNLABELLED))
        .when((ts >= validation_from) & ~pl.col("_covered"))
        .then(pl.lit(UNLABELLED))
        .when(ts >= test_from)
        .then(pl.lit("test"))
        .when(ts >= validation_from)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )
    return framed.with_columns(split.alias(SPLIT)).drop("_labelled_until", "_covered")


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
    to come is ``unlabelled`` (never a negative).
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
    return _with_split(frame, spec)
