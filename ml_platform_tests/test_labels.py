"""Delayed labels land as their own daily partitions; monitoring judges only the days they cover."""

import datetime as dt

import duckdb
import polars as pl
import pytest

from ml_platform.ingestion.labels import label_days_table, labels_table, read_label_file
from ml_platform.monitoring.performance import judged_predictions
from ml_platform.monitoring.results import day_ranges
from ml_platform.usecases.sensor_anomaly import SPEC

from .conftest import FIRST_DAY, day_range_tags, land_days, make_platform

SECOND_DAY = FIRST_DAY + dt.timedelta(days=1)


@pytest.fixture
def platform(tmp_path):
    platform = make_platform(tmp_path / "home")
    land_days(platform, FIRST_DAY, 2)
    return platform


def labels_dir(platform):
    return platform.settings.labels_dir_for(SPEC.name)


def query(platform, sql):
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        return conn.sql(sql).fetchall()


def load_labels(platform, first=FIRST_DAY, last=SECOND_DAY, **kwargs):
    return platform.materialize(["raw_labels"], tags=day_range_tags(first, last), **kwargs)


def test_each_covered_day_holds_its_windows_with_provenance(platform):
    (path,) = labels_dir(platform).glob("*.csv")
    windows = read_label_file(path, SPEC)
    assert len(windows) > 0
    load_labels(platform)
    assert query(platform, f"SELECT label_day FROM {label_days_table(SPEC)} ORDER BY 1") == [
        (FIRST_DAY,),
        (SECOND_DAY,),
    ]
    stored = query(
        platform, f'SELECT DISTINCT sensor_id, start, "end", source_file FROM {labels_table(SPEC)}'
    )
    assert len(stored) == len(windows) and {row[3] for row in stored} == {str(path)}


def test_a_corrected_labels_file_replaces_exactly_its_days(platform):
    load_labels(platform)
    before = query(platform, f"SELECT count(*) FROM {labels_table(SPEC)} WHERE label_day = '{FIRST_DAY}'")
    # A late correction for the second day only: one window, in a newer file.
    correction = labels_dir(platform) / f"anomalies_{SECOND_DAY}_{SECOND_DAY}.csv"
    correction.write_text(f"sensor_id,start,end\ns-1,{SECOND_DAY}T03:00:00Z,{SECOND_DAY}T03:30:00Z\n")
    load_labels(platform, SECOND_DAY, SECOND_DAY)
    second = query(
        platform, f"SELECT sensor_id, source_file FROM {labels_table(SPEC)} WHERE label_day = '{SECOND_DAY}'"
    )
    assert second == [("s-1", str(correction))]
    after = query(platform, f"SELECT count(*) FROM {labels_table(SPEC)} WHERE label_day = '{FIRST_DAY}'")
    assert after == before


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("sensor_id,start,end\ns-1,2026-10-01T05:00:00Z,2026-10-01T04:00:00Z\n", "line 2: field 'end'"),
        ("sensor_id,start,end\ns-1,2026-10-01T05:00:00Z,2026-10-01T06:00:00Z\ns-2,yesterday,x\n", "line 3"),
        (
            "sensor,start,end\ns-1,2026-10-01T05:00:00Z,2026-10-01T06:00:00Z\n",
            "missing column(s) ['sensor_id']",
        ),
    ],
)
def test_a_bad_labels_file_fails_naming_file_and_line_and_writes_nothing(platform, content, named):
    load_labels(platform, FIRST_DAY, FIRST_DAY)
    before = query(platform, f"SELECT * FROM {labels_table(SPEC)} ORDER BY ALL")
    bad = labels_dir(platform) / f"fix_{FIRST_DAY}_{FIRST_DAY}.csv"
    bad.write_text(content)
    result = load_labels(platform, FIRST_DAY, FIRST_DAY, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert str(bad) in message and named in message
    assert query(platform, f"SELECT * FROM {labels_table(SPEC)} ORDER BY ALL") == before
    assert bad.read_text() == content  # landed files are never modified


def test_a_day_without_labels_yet_fails_naming_it(platform):
    later = SECOND_DAY + dt.timedelta(days=1)
    result = load_labels(platform, later, later, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert f"covers {later}" in failure.step_failure_data.user_failure_data.description


def test_days_no_file_covers_yet_are_left_unlabelled_while_the_covered_ones_load(platform):
    """A range (a monthly partition, a backfill) covered in part: its covered days load, the others
    are not in label_days (nothing of them is judged) and the metadata counts them."""
    later = SECOND_DAY + dt.timedelta(days=1)
    result = load_labels(platform, FIRST_DAY, later)
    assert result.success
    events = result.get_asset_materialization_events()  # one per day, the run's metadata on each
    assert len(events) == 3
    metadata = {k: v.value for k, v in events[0].materialization.metadata.items()}
    assert metadata["days"] == 3 and metadata["days_with_labels"] == 2
    assert query(platform, f"SELECT label_day FROM {label_days_table(SPEC)} ORDER BY 1") == [
        (FIRST_DAY,),
        (SECOND_DAY,),
    ]


def test_only_predictions_old_enough_and_on_labelled_days_are_judged():
    now = dt.datetime(2026, 10, 3, 12, tzinfo=dt.UTC)
    times = [dt.datetime(2026, 10, d, h, tzinfo=dt.UTC) for d, h in ((1, 1), (2, 1), (3, 11))]
    predictions = pl.DataFrame(
        {
            "model_version": "1",
            SPEC.entity: "s-1",
            "feature_event_timestamp": times,
            "anomaly_score": [0.1, 0.2, 0.3],
        }
    )
    windows = pl.DataFrame(
        {SPEC.entity: ["s-1"], "start": [times[0]], "end": [times[0] + dt.timedelta(minutes=5)]}
    )
    judged, stats = judged_predictions(predictions, windows, SPEC, [dt.date(2026, 10, 1)], now)
    assert judged["anomaly_score"].to_list() == [0.1]  # day 2: no labels yet; day 3: too recent
    assert judged["label"].to_list() == [1]
    assert stats["matured"] == 2 and stats["labelled"] == 1 and stats["label_coverage"] == 0.5


def test_labelled_days_read_as_ranges():
    days = [dt.date(2026, 1, d) for d in (1, 2, 3, 5)]
    assert day_ranges(days) == "2026-01-01..2026-01-03, 2026-01-05..2026-01-05"


def test_without_any_window_every_row_is_labelled_normal():
    from ml_platform.training.dataset import LABEL, label_rows

    rows = pl.DataFrame(
        {
            "sensor_id": ["s-1", "s-2", "s-1"],
            "event_timestamp": [dt.datetime(2026, 10, 1, h, tzinfo=dt.UTC) for h in (1, 2, 3)],
        }
    )
    windows = pl.DataFrame(
        schema={"sensor_id": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}
    )
    labels = label_rows(rows, windows, SPEC)
    assert labels[LABEL].to_list() == [0, 0, 0]
