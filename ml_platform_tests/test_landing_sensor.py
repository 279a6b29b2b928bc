"""The landing sensor starts a run over the days of new or changed files (one per range of adjacent
days), keyed by their content."""

import datetime as dt

import pytest

from ml_platform.ingestion.landing import file_sha256

from .conftest import FIRST_DAY, keys, land_days, make_platform, requested_partitions


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path / "home")


def test_new_files_request_their_days(platform):
    files = land_days(platform, FIRST_DAY, 2)
    result, cursor = platform.tick(platform.sensor("landing_sensor"))
    ingest_keys = set(keys("raw_readings", "readings_quarantine"))
    # Two adjacent days: one run over both, keyed by both files at their content.
    (request,) = [r for r in result.run_requests if set(r.asset_selection) == ingest_keys]
    assert requested_partitions(request) == (
        FIRST_DAY.isoformat(),
        (FIRST_DAY + dt.timedelta(days=1)).isoformat(),
    )
    for path in (p for p in files if p.suffix == ".csv" and "readings" in p.name):
        assert path.name in request.run_key and file_sha256(path)[:12] in request.run_key
    assert platform.materialize(["raw_readings", "readings_quarantine"], tags=request.tags).success

    # The labels file of those days: one run of raw_labels over the days it covers.
    (labels,) = [r for r in result.run_requests if set(r.asset_selection) == set(keys("raw_labels"))]
    assert set(labels.asset_selection) == set(keys("raw_labels"))
    assert labels.tags["dagster/asset_partition_range_start"] == FIRST_DAY.isoformat()
    assert labels.tags["dagster/asset_partition_range_end"] == (FIRST_DAY + dt.timedelta(days=1)).isoformat()
    assert platform.materialize(["raw_labels"], tags=labels.tags).success

    again, _ = platform.tick(platform.sensor("landing_sensor"), cursor)
    assert again.run_requests == []


def test_ingested_files_are_not_requested_again_and_changed_ones_are(platform):
    files = land_days(platform, FIRST_DAY, 1)
    platform.ingest(FIRST_DAY, FIRST_DAY)
    result, cursor = platform.tick(platform.sensor("landing_sensor"))
    assert result.run_requests == []  # the partition already holds this file at this content

    readings = next(p for p in files if p.name.startswith("readings_"))
    readings.write_text(readings.read_text().replace("s-1,", "s-9,", 1))  # an upstream correction
    changed, _ = platform.tick(platform.sensor("landing_sensor"), cursor)
    assert [r.partition_key for r in changed.run_requests] == [FIRST_DAY.isoformat()]
    assert file_sha256(readings)[:12] in changed.run_requests[0].run_key


def test_a_file_spanning_days_requests_each_day(platform):
    platform.landing.mkdir(parents=True)
    path = platform.landing / "backfill.csv"
    path.write_text(
        "sensor_id,timestamp,value\n"
        "s-1,2026-10-03T23:55:00Z,1.0\n"
        "s-1,2026-10-04T00:00:00,2.0\n"
        "s-1,2026-10-04T01:00:00+02:00,3.0\n"
    )
    result, _ = platform.tick(platform.sensor("landing_sensor"))
    # The third row is 2026-10-03T23:00Z: offsets are honoured, naive times are UTC.
    assert [requested_partitions(r) for r in result.run_requests] == [("2026-10-03", "2026-10-04")]


def test_days_apart_are_separate_runs(platform):
    """Runs cover adjacent days only: a day between two files' days is not re-ingested."""
    platform.landing.mkdir(parents=True)
    for day in ("2026-10-03", "2026-10-04", "2026-10-07"):
        (platform.landing / f"readings_{day}.csv").write_text(
            f"sensor_id,timestamp,value\ns-1,{day}T12:00:00Z,1.0\n"
        )
    result, _ = platform.tick(platform.sensor("landing_sensor"))
    assert sorted(requested_partitions(r) for r in result.run_requests) == [
        ("2026-10-03", "2026-10-04"),
        ("2026-10-07", "2026-10-07"),
    ]
