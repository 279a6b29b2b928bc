"""The landing sensor starts one run per day of each new or changed file, keyed by its content."""

import datetime as dt

import pytest

from ml_platform.ingestion.landing import file_sha256

from .conftest import FIRST_DAY, keys, land_days, make_platform


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path / "home")


def test_new_files_request_their_days(platform):
    files = land_days(platform, FIRST_DAY, 2)
    result, cursor = platform.tick(platform.sensor("landing_sensor"))
    requests = sorted((r for r in result.run_requests if r.partition_key), key=lambda r: r.partition_key)
    assert [r.partition_key for r in requests] == [
        FIRST_DAY.isoformat(),
        (FIRST_DAY + dt.timedelta(days=1)).isoformat(),
    ]
    for request, path in zip(
        requests,
        sorted(p for p in files if p.suffix == ".csv" and "readings" in p.name),
        strict=True,
    ):
        assert path.name in request.run_key and file_sha256(path)[:12] in request.run_key
        assert set(request.asset_selection) == set(keys("raw_readings", "readings_quarantine"))

    # The labels file of those days: one run of raw_labels over the days it covers.
    (labels,) = [r for r in result.run_requests if not r.partition_key]
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
    assert sorted(r.partition_key for r in result.run_requests) == ["2026-10-03", "2026-10-04"]
