"""Per-event labels: landed or posted files add up, the newest label of an event wins, training and
live performance join them on entity and event time, and a bad label is refused naming its place."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ml_platform.ingestion.labels import (
    LabelFileError,
    label_days_table,
    labelled_days,
    labels_table,
    load_label_days,
    read_labels,
)
from ml_platform.monitoring.performance import judged_predictions
from ml_platform.serving.labels import LabelError, LabelLanding, event_labels, window_labels
from ml_platform.settings import load_settings
from ml_platform.spec import EventLabels
from ml_platform.spec_file import UseCaseError, validate
from ml_platform.training.dataset import LABEL, SPLIT, UNLABELLED, build_training_set, label_rows
from ml_platform.usecases.sensor_anomaly import SPEC as SENSORS

SPEC = dataclasses.replace(
    SENSORS, name="claims", partitions_start="2014-01-01", labels=EventLabels(column="fraud")
)
DAY = dt.date(2014, 3, 1)
NEXT = DAY + dt.timedelta(days=1)


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def write(folder: Path, name: str, text: str, mtime_s: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))  # the order files landed in decides which label is newest
    return path


@pytest.fixture
def conn():
    with duckdb.connect() as conn:
        yield conn


def test_labels_add_up_across_files_and_the_newest_label_of_an_event_wins(tmp_path, conn):
    first = write(
        tmp_path,
        f"batch_{DAY}_{NEXT}.csv",
        "sensor_id,timestamp,fraud\n"
        f"s-1,{DAY}T01:00:00Z,1\ns-1,{DAY}T02:00:00Z,0\ns-2,{NEXT}T05:00:00,true\n",
        1_000,
    )
    correction = write(
        tmp_path, f"fix_{DAY}_{DAY}.csv", f"sensor_id,timestamp,fraud\ns-1,{DAY}T01:00:00Z,false\n", 2_000
    )
    metadata = load_label_days(conn, SPEC, tmp_path, DAY, NEXT)
    assert metadata["dagster/row_count"] == 3 and metadata["days_with_labels"] == 2
    assert set(metadata["source_files"]) == {str(first), str(correction)}
    labels = read_labels(conn, SPEC)
    assert labels.columns == ["sensor_id", "event_timestamp", LABEL]
    assert labels.rows() == [
        ("s-1", at(DAY, 1), 0),  # corrected by the newer file
        ("s-1", at(DAY, 2), 0),
        ("s-2", at(NEXT, 5), 1),  # a time without offset is UTC
    ]
    query = f'SELECT sensor_id, "timestamp", source_file FROM {labels_table(SPEC)} ORDER BY ALL'
    assert conn.sql(query).fetchall()[0] == ("s-1", at(DAY, 1), str(correction))
    assert labelled_days(conn, SPEC) == [DAY, NEXT]
    # Reloading one day replaces that day only.
    load_label_days(conn, SPEC, tmp_path, NEXT, NEXT)
    assert read_labels(conn, SPEC).height == 3
    assert conn.sql(f"SELECT count(*) FROM {label_days_table(SPEC)}").fetchall()[0][0] == 3


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (f"sensor_id,timestamp,fraud\ns-1,{DAY}T01:00:00Z,maybe\n", "line 2: field 'fraud'"),
        (f"sensor_id,timestamp,fraud\ns-1,{DAY}T01:00:00Z,1\ns-1,soon,1\n", "line 3: field 'timestamp'"),
        (f"sensor_id,timestamp,fraud\ns-1,{NEXT}T01:00:00Z,1\n", "outside the days the file name covers"),
        (f"sensor_id,timestamp\ns-1,{DAY}T01:00:00Z\n", "missing column(s) ['fraud']"),
    ],
)
def test_a_bad_event_labels_file_fails_naming_file_line_and_field_and_writes_nothing(
    tmp_path, conn, content, named
):
    bad = write(tmp_path, f"late_{DAY}_{DAY}.csv", content, 1_000)
    with pytest.raises(LabelFileError) as error:
        load_label_days(conn, SPEC, tmp_path, DAY, DAY)
    assert str(bad) in str(error.value) and named in str(error.value)
    assert read_labels(conn, SPEC).is_empty()
    assert bad.read_text() == content


def rows(*keys: tuple[str, dt.datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"sensor_id": e, "event_timestamp": t} for e, t in keys],
        schema={"sensor_id": pl.String, "event_timestamp": pl.Datetime("us", "UTC")},
    )


def test_an_event_without_a_label_is_unknown_or_after_the_lateness_a_negative_if_the_spec_says_so():
    labels = pl.DataFrame(
        {"sensor_id": ["s-1", "s-2"], "event_timestamp": [at(DAY, 1), at(NEXT, 21)], LABEL: [1, 1]},
        schema={"sensor_id": pl.String, "event_timestamp": pl.Datetime("us", "UTC"), LABEL: pl.Int8},
    )
    events = rows(
        ("s-1", at(DAY, 1)),
        ("s-1", at(DAY, 2)),
        ("s-2", at(DAY, 1)),
        ("s-1", at(NEXT, 20)),
        ("s-2", at(NEXT, 21)),
    )
    now = at(NEXT, 23)  # the sensor spec's lateness is 6 h: the last two events are too recent
    assert label_rows(events, labels, SPEC, now=now)[LABEL].to_list() == [1, None, None, None, 1]
    negatives = dataclasses.replace(SPEC, labels=EventLabels(column="fraud", missing="negative"))
    # Positives-only labels: a recent event is not known yet, even one already reported positive.
    assert label_rows(events, labels, negatives, now=now)[LABEL].to_list() == [1, 0, 0, None, None]


def test_training_tests_on_labelled_events_only_and_live_performance_joins_the_same_way():
    times = [at(DAY, 0) + dt.timedelta(minutes=10 * i) for i in range(100)]
    spine = pl.DataFrame({"sensor_id": "s-1", "timestamp": times})
    features = pl.DataFrame({"sensor_id": "s-1", "event_timestamp": times}).with_columns(
        *(pl.lit(1.0).alias(name) for name in SPEC.features.feature_names())
    )
    labelled = times[:80]  # the 20 newest events have no label yet
    labels = pl.DataFrame(
        {"sensor_id": "s-1", "event_timestamp": labelled, LABEL: [int(i % 10 == 0) for i in range(80)]}
    ).cast({LABEL: pl.Int8})
    frame = build_training_set(spine, features, labels, SPEC, now=at(NEXT, 12))
    splits = dict(frame.group_by(SPLIT).len().rows())
    assert splits[UNLABELLED] == 20 and frame.filter(pl.col(SPLIT) == "test")[LABEL].null_count() == 0
    assert frame.filter(pl.col(SPLIT) == "test")["event_timestamp"].max() == labelled[-1]

    predictions = pl.DataFrame(
        {
            "model_version": "3",
            "sensor_id": "s-1",
            "feature_event_timestamp": [times[0], times[0], times[1], times[95]],
            "anomaly_score": [0.9, 0.9, 0.1, 0.5],
        }
    )
    judged, stats = judged_predictions(predictions, labels, SPEC, [], at(NEXT, 12))
    assert judged[LABEL].to_list() == [1, 0]  # served twice, judged once; the last has no label
    assert stats == {"predictions": 4.0, "matured": 3.0, "labelled": 2.0, "label_coverage": 2 / 3}


def test_a_row_count_training_window_takes_the_newest_rows():
    from ml_platform.training.dataset import training_window

    times = [at(DAY, 0) + dt.timedelta(hours=i) for i in range(48)]
    spine = pl.DataFrame({"sensor_id": ["s-1", "s-2"] * 24, "timestamp": times})
    by_rows = dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, training_rows=10))
    assert training_window(spine, by_rows)["timestamp"].to_list() == times[-10:]
    with pytest.raises(UseCaseError, match="model.training_rows: must be positive"):
        validate(dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, training_rows=0)), "t")


def test_a_sparse_entity_keeps_its_newest_rows_beyond_the_training_days():
    from ml_platform.training.dataset import training_window

    # s-busy reports every 10 minutes for the last 2 days; s-sparse once a day for 30 days.
    busy = [at(DAY, 0) + dt.timedelta(minutes=10 * i) for i in range(288)]
    sparse = [at(DAY, 0) - dt.timedelta(days=28) + dt.timedelta(days=i) for i in range(30)]
    spine = pl.DataFrame(
        {"sensor_id": ["s-busy"] * len(busy) + ["s-sparse"] * len(sparse), "timestamp": busy + sparse}
    )
    two_days = dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, training_days=2))
    window = training_window(spine, two_days)
    assert window.group_by("sensor_id").len().sort("sensor_id")["len"].to_list() == [288, 2]

    at_least = dataclasses.replace(two_days, model=dataclasses.replace(two_days.model, min_entity_rows=20))
    window = training_window(spine, at_least)
    assert window.filter(pl.col("sensor_id") == "s-sparse")["timestamp"].to_list() == sparse[-20:]
    # Nothing is added twice, nor out of order.
    assert window.filter(pl.col("sensor_id") == "s-busy")["timestamp"].to_list() == busy
    assert window["timestamp"].is_sorted()

    # Each sensor is then split by its own time: both are validated and tested on their newest rows.
    keys = spine.rename({"timestamp": "event_timestamp"})
    features = keys.with_columns(*(pl.lit(1.0).alias(name) for name in SPEC.features.feature_names()))
    labels = keys.with_columns(pl.lit(0, pl.Int8).alias(LABEL))
    frame = build_training_set(spine, features, labels, at_least, now=at(NEXT, 12) + dt.timedelta(days=5))

    def rows(sensor: str, split: str) -> list:
        chosen = frame.filter((pl.col("sensor_id") == sensor) & (pl.col(SPLIT) == split))
        return chosen["event_timestamp"].to_list()

    # 20 daily rows span 19 days: validation from 60% of the span (day 11.4), test from 75% (14.25).
    assert rows("s-sparse", "test") == sparse[-5:] and rows("s-sparse", "validation") == sparse[-8:-5]
    # 288 rows every 10 minutes span 2870 minutes: test from minute 2152.5, validation from 1722.
    assert rows("s-busy", "test") == busy[216:] and rows("s-busy", "validation") == busy[173:216]
    with pytest.raises(UseCaseError, match="model.min_entity_rows: must be positive"):
        validate(dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, min_entity_rows=0)), "t")


def test_an_event_labels_spec_is_checked_when_loaded():
    with pytest.raises(UseCaseError, match="labels.column: 'sensor_id' is the entity or the timestamp"):
        validate(dataclasses.replace(SPEC, labels=EventLabels(column="sensor_id")), "spec.yaml")
    with pytest.raises(UseCaseError, match="labels.missing: 'zero' is not one of"):
        validate(dataclasses.replace(SPEC, labels=EventLabels(missing="zero")), "spec.yaml")


def test_a_post_lands_a_labels_file_the_loader_reads(tmp_path, monkeypatch, conn):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path))
    landing = LabelLanding(load_settings(), SPEC)
    body = {
        "labels": [
            {"sensor_id": "s-1", "timestamp": f"{DAY}T01:00:00+02:00", "fraud": True},
            {"sensor_id": "s-2", "timestamp": f"{NEXT}T04:00:00Z", "fraud": 0},
        ]
    }
    landed = landing.land(body)
    before = DAY - dt.timedelta(days=1)  # 01:00+02:00 is the day before in UTC
    assert (landed.accepted, landed.first_day, landed.last_day) == (2, before, NEXT)
    folder = tmp_path / "landing" / "claims" / "labels"
    assert [p.name for p in folder.iterdir()] == [landed.file]  # no temporary file left
    second = landing.land({"sensor_id": "s-1", "timestamp": f"{DAY}T23:00:00Z", "fraud": 1})
    assert second.file != landed.file
    load_label_days(conn, SPEC, folder, before, NEXT)
    assert read_labels(conn, SPEC).rows() == [
        ("s-1", at(before, 23), 1),
        ("s-1", at(DAY, 23), 1),
        ("s-2", at(NEXT, 4), 0),
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"labels": []}, "non-empty list"),
        ({"sensor_id": "s-1", "timestamp": f"{DAY}T01:00:00Z", "fraud": 2}, "label 0: field 'fraud'"),
        ({"sensor_id": "s-1", "timestamp": "noon", "fraud": 1}, "label 0: field 'timestamp'"),
        ({"sensor_id": "s-1", "timestamp": f"{DAY}T01:00:00Z"}, "label 0: field 'fraud' is required"),
        ({"sensor_id": "s-1", "timestamp": f"{DAY}T01:00Z", "fraud": 1, "x": 1}, "unknown field(s) x"),
        (
            {"sensor_id": "s-1", "timestamp": "2013-12-31T01:00:00Z", "fraud": 1},
            "outside the use case's days",
        ),
    ],
)
def test_a_bad_posted_label_is_refused_naming_item_and_field(body, named):
    with pytest.raises(LabelError) as error:
        event_labels(SPEC, body)
    assert named in str(error.value)


def test_posted_windows_state_whole_days():
    day = SENSORS.partitions_start
    window = {"sensor_id": "s-1", "start": f"{day}T03:00:00Z", "end": f"{day}T04:00:00Z"}
    windows, first, last = window_labels(SENSORS, {"first_day": day, "last_day": day, "windows": [window]})
    assert windows[0][0] == "s-1" and first == last == dt.date.fromisoformat(day)
    empty = window_labels(SENSORS, {"first_day": day, "last_day": day, "windows": []})
    assert empty[0] == []  # a day without trouble is stated, not left open
    with pytest.raises(LabelError, match="window 0: lies outside the days"):
        later = str(dt.date.fromisoformat(day) + dt.timedelta(days=3))
        window_labels(SENSORS, {"first_day": later, "last_day": later, "windows": [window]})
    with pytest.raises(LabelError, match="send the windows of whole days"):
        window_labels(SENSORS, [window])
