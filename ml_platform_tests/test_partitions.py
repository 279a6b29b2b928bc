"""Partitions by day, hour or month: their keys, their grains and the rows a grain holds."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pytest

from ml_platform.ingestion.raw import GrainMismatch, ensure_raw_tables
from ml_platform.partitions import (
    DAY,
    HOUR,
    grain,
    last_partition_of_day,
    partition_of,
    partitions_of,
    time_partitions,
)
from ml_platform.usecases import get_use_case

SPEC = dataclasses.replace(get_use_case("sensor_anomaly"), partitions_start="2014-02-15")


def spec_by(partitions: str):
    return dataclasses.replace(SPEC, partitions=partitions)


@pytest.mark.parametrize(
    ("partitions", "value", "key"),
    [
        ("daily", "2014-02-27 05:10:00", "2014-02-27"),
        ("hourly", "2014-02-27 05:10:00", "2014-02-27-05:00"),
        ("hourly", "2014-02-27", "2014-02-27-00:00"),
        ("monthly", "2014-02-27 05:10:00", "2014-02-01"),
        ("hourly", dt.datetime(2014, 2, 27, 23), "2014-02-27-23:00"),
        ("daily", dt.date(2014, 2, 27), "2014-02-27"),
        ("daily", dt.datetime(2014, 2, 28, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2014-02-27"),
    ],
)
def test_a_grain_belongs_to_one_partition_of_each_kind(partitions, value, key):
    spec = spec_by(partitions)
    assert partition_of(spec, value) == key
    assert time_partitions(spec).has_partition_key(key)


def test_partitions_begin_with_the_one_holding_partitions_start():
    assert time_partitions(spec_by("hourly")).get_partition_keys()[0] == "2014-02-15-00:00"
    assert time_partitions(spec_by("monthly")).get_partition_keys()[0] == "2014-02-01"
    assert time_partitions(spec_by("daily")).get_partition_keys()[0] == "2014-02-15"


def test_partitions_of_grains_are_each_named_once_in_order():
    hours = ["2014-02-27 02:00:00", "2014-02-27 00:00:00", "2014-02-27 02:00:00"]
    assert partitions_of(spec_by("hourly"), hours) == ["2014-02-27-00:00", "2014-02-27-02:00"]
    assert partitions_of(spec_by("monthly"), ["2014-03-01", "2014-02-28"]) == ["2014-02-01", "2014-03-01"]


def test_a_days_last_partition_is_its_last_hour_when_hourly():
    day = dt.date(2014, 2, 27)
    assert last_partition_of_day(spec_by("hourly"), day) == "2014-02-27-23:00"
    assert last_partition_of_day(spec_by("daily"), day) == "2014-02-27"
    assert last_partition_of_day(spec_by("monthly"), day) == "2014-02-01"


def test_the_sql_grain_of_a_timestamp_equals_the_python_one():
    """Rows are placed by SQL, partitions asked for in Python: the two must agree, also for a
    timestamp with an offset and one before 1970."""
    moments = [
        dt.datetime(2014, 2, 27, 5, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(1969, 12, 31, 23, 30, tzinfo=dt.UTC),
        dt.datetime(2014, 2, 27, 0, 0, tzinfo=dt.UTC),
    ]
    with duckdb.connect() as conn:
        for unit in (DAY, HOUR):
            for moment in moments:
                sql = unit.of("CAST(? AS TIMESTAMPTZ)")
                query = f"SELECT {sql}, CAST({sql} AS VARCHAR)"
                found, text = conn.execute(query, [moment, moment]).fetchone()
                assert found == unit.of_time(moment), (unit.name, moment)
                assert unit.text(found) == text  # as DuckDB writes it, which metadata keys use


def test_a_grain_span_is_half_open_and_lists_every_grain():
    first, last = dt.datetime(2014, 2, 27, 22), dt.datetime(2014, 2, 28, 1)
    assert HOUR.span(first, last) == (
        dt.datetime(2014, 2, 27, 22, tzinfo=dt.UTC),
        dt.datetime(2014, 2, 28, 2, tzinfo=dt.UTC),
    )
    assert len(HOUR.values(first, last)) == 4
    assert HOUR.days(first, last) == (dt.date(2014, 2, 27), dt.date(2014, 2, 28))


def test_a_warehouse_stored_by_day_is_not_read_by_hour():
    with duckdb.connect() as conn:
        ensure_raw_tables(conn, spec_by("daily"))
        with pytest.raises(GrainMismatch, match="partition_hour") as refused:
            ensure_raw_tables(conn, spec_by("hourly"))
    assert "DROP SCHEMA sensor_anomaly CASCADE" in str(refused.value)
    assert grain(spec_by("monthly")) is DAY


def test_a_range_of_many_hours_reports_each_day():
    """Every partition's materialization of a range run carries the metadata: a month by hour
    reports each day (its hours summed) instead of 672 hours; a short range each hour."""
    from ml_platform.ingestion.raw import RawLoad
    from ml_platform.ingestion.results import _rows_per_grain

    hours = HOUR.values(dt.datetime(2014, 2, 1), dt.datetime(2014, 2, 28, 23))
    month = RawLoad(rows_by_grain={HOUR.text(h): 12 + h.hour % 2 for h in hours})
    by_day = _rows_per_grain(month, "hour")["rows_by_day"]
    assert len(by_day) == 28 and set(by_day.values()) == {12 * 24 + 12}
    day = RawLoad(rows_by_grain={HOUR.text(h): 12 for h in hours[:24]})
    assert len(_rows_per_grain(day, "hour")["rows_by_hour"]) == 24
    days = RawLoad(rows_by_grain={f"2014-{m:02}-{d:02}": 5 for m in (1, 2, 3) for d in range(1, 29)})
    assert len(_rows_per_grain(days, "day")["rows_by_day"]) == 84  # days are each listed


def test_the_files_each_partition_holds_are_read_in_pages_newest_first():
    """The landing sensor reads what every partition of a file holds in a few queries: the latest
    materialization of each wins, over pages of the event log."""
    import dagster as dg

    from ml_platform.automation.sensors import ingested_files_by_partition

    key = dg.AssetKey(["pumps", "raw_events"])
    hours = [
        partition_of(spec_by("hourly"), h)
        for h in HOUR.values(dt.datetime(2014, 2, 1), dt.datetime(2014, 3, 2, 23))
    ]
    with dg.DagsterInstance.ephemeral() as instance:
        for content in ("old", "new"):
            for hour in hours:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(
                        key, partition=hour, metadata={"source_files": {"a.csv": content}}
                    )
                )
        found = ingested_files_by_partition(instance, key, [*hours, "2014-04-01-00:00"])
        assert len(hours) > 500 and len(found) == len(hours)  # more than one page; the unbuilt one absent
        assert {files["a.csv"] for files in found.values()} == {"new"}
        assert ingested_files_by_partition(instance, key, [hours[0]]) == {hours[0]: {"a.csv": "new"}}
        assert ingested_files_by_partition(instance, key, ["2014-04-01-00:00"]) == {}
