"""The landing sensor starts a run over the days of new or changed files (one per range of adjacent
days), keyed by their content, from raw rows through staging to features."""

import datetime as dt

import dagster as dg
import pytest

from ml_platform.ingestion.landing import file_sha256

from .conftest import FIRST_DAY, INGESTION, key, keys, land_days, make_platform, requested_partitions


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path / "home")


def test_new_files_request_their_days(platform):
    files = land_days(platform, FIRST_DAY, 2)
    result, cursor = platform.tick(platform.sensor("landing_sensor"))
    # Two adjacent days: one run over both, keyed by both files at their content.
    (request,) = [r for r in result.run_requests if set(r.asset_selection) == set(keys(*INGESTION))]
    assert requested_partitions(request) == (
        FIRST_DAY.isoformat(),
        (FIRST_DAY + dt.timedelta(days=1)).isoformat(),
    )
    for path in (p for p in files if p.suffix == ".csv" and "readings" in p.name):
        assert path.name in request.run_key and file_sha256(path)[:12] in request.run_key
    assert platform.materialize(INGESTION, tags=request.tags).success

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


def _requested(platform, cursor) -> tuple[dict[str, int], dg.EvaluateAutomationConditionsResult]:
    """What one evaluation of the assets' automation conditions requests: name -> how many."""
    result = dg.evaluate_automation_conditions(defs=platform.defs, instance=platform.instance, cursor=cursor)
    requested = {r.key.path[-1]: r.true_subset.size for r in result.results if r.true_subset.size}
    return requested, result


def test_automation_follows_the_landing_run_and_does_not_stage_its_days_again(platform):
    """The landing run staged its days and computed their features: automation starts what follows
    (online features, the drift report) and stages none of those days again; a raw day
    materialized by hand is staged by automation."""
    land_days(platform, FIRST_DAY, 2)
    requests, _ = platform.run_requests(platform.sensor("landing_sensor"))
    (request,) = [r for r in requests if set(r.asset_selection) == set(keys(*INGESTION))]
    _, before = _requested(platform, None)
    # As the daemon launches it: a run of the asset job with the request's selection (which
    # Dagster reads to tell an upstream update made by the same run).
    job = platform.defs.resolve_implicit_global_asset_job_def()
    run = job.execute_in_process(
        instance=platform.instance, asset_selection=request.asset_selection, tags=request.tags
    )
    assert run.success and run.dagster_run.asset_selection == set(keys(*INGESTION))
    requested, after = _requested(platform, before.cursor)
    assert {"online_features", "drift_report"} <= set(requested), requested
    assert not {"stg_readings", "features"} & set(requested), requested

    second = (FIRST_DAY + dt.timedelta(days=1)).isoformat()
    assert platform.materialize(["raw_readings", "readings_quarantine"], partition_key=second).success
    requested, by_hand = _requested(platform, after.cursor)
    # Staging, and features in the same run (they follow what will be requested).
    assert by_hand.get_requested_partitions(key("stg_readings")) == {second}, requested
    assert by_hand.get_requested_partitions(key("features")) == {second}, requested
    # Requested once: not again while nothing upstream changes, even if that run never happens.
    requested, _ = _requested(platform, by_hand.cursor)
    assert not {"stg_readings", "features"} & set(requested), requested
