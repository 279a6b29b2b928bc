"""Bad rows are quarantined exactly; a wrong schema stops the run before anything downstream."""

import datetime as dt
import re
import subprocess
import sys

import pandas as pd
import pytest

from ml_platform.metadata import latest_metadata
from ml_platform.settings import DBT_PROJECT_DIR

from .conftest import FIRST_DAY, USE_CASE, key, land_days, make_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    platform = make_platform(tmp_path_factory.mktemp("validation-home"))
    land_days(platform, FIRST_DAY, 2)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=1))
    return platform


def _rows(platform, sql: str) -> list[tuple]:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(sql).fetchall()


def test_bad_rows_are_quarantined_exactly(platform):
    day = FIRST_DAY + dt.timedelta(days=2)
    clean = land_days(platform, day, 1)[0]
    frame = pd.read_csv(clean, dtype=str)
    clean.unlink()  # this day is landed once, as the file with bad rows below
    # Data rows are numbered from 1, the way source_row counts them.
    frame.loc[4, "value"] = "not-a-number"
    frame.loc[9, "value"] = "5000"  # outside the declared range
    frame.loc[14, "sensor_id"] = None
    frame.loc[19, "timestamp"] = "yesterday-ish"
    frame.loc[24, "value"] = "nan"
    duplicate = frame.iloc[[30]]
    frame = pd.concat([frame, duplicate], ignore_index=True)  # last row repeats row 31's key
    path = platform.landing / f"readings_{day.isoformat()}_with_errors.csv"
    frame.to_csv(path, index=False)

    result = platform.ingest(day, day)
    assert result.success
    expected = {
        5: "type:value",
        10: "range:value",
        15: "not_null:sensor_id",
        20: "type:timestamp",
        25: "type:value",
        len(frame): "duplicate_key",
    }
    quarantined = _rows(
        platform,
        f"""SELECT source_row, reject_reason FROM {USE_CASE}.readings_quarantine
            WHERE source_file = '{path}' ORDER BY source_row""",
    )
    assert dict(quarantined) == expected

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["value_range"].passed is False and checks["value_range"].severity.value == "WARN"
    assert checks["value_range"].metadata["violations"].value == 1
    assert checks["types"].metadata["violations"].value == 3
    assert checks["unique_key"].metadata["violations"].value == 1
    assert checks["bad_share"].passed is True
    assert "5000" in checks["value_range"].metadata["sample"].value

    # Every landed row is accounted for: kept in raw, and either staged or quarantined.
    raw_rows = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE source_file = '{path}'")
    assert raw_rows[0][0] == len(frame)
    staged = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings WHERE source_file = '{path}'")
    assert staged[0][0] == len(frame) - len(expected)


def test_mostly_bad_file_blocks_downstream(platform):
    day = FIRST_DAY + dt.timedelta(days=3)
    path = land_days(platform, day, 1)[0]
    frame = pd.read_csv(path, dtype=str)
    frame.loc[: len(frame) // 5, "value"] = "-99999"
    path.unlink()
    frame.to_csv(path.with_name(f"readings_{day.isoformat()}_broken.csv"), index=False)
    result = platform.materialize(
        ["raw_readings", "readings_quarantine", "stg_readings"],
        partition_key=day.isoformat(),
        raise_on_error=False,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["bad_share"].passed is False
    assert checks["bad_share"].metadata["bad_share"].value > 0.05
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {key("raw_readings")}


def test_wrong_schema_fails_at_validation_and_nothing_downstream_materializes(platform):
    day = FIRST_DAY + dt.timedelta(days=4)
    stg_before = platform.instance.get_latest_materialization_event(key("stg_readings"))
    path = land_days(platform, day, 1)[0]
    frame = pd.read_csv(path, dtype=str).rename(columns={"value": "reading"})
    path.unlink()
    bad = path.with_name(f"readings_{day.isoformat()}_renamed.csv")
    frame.to_csv(bad, index=False)

    result = platform.materialize(
        ["raw_readings", "readings_quarantine", "stg_readings", "features"],
        partition_key=day.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    schema = next(e for e in result.get_asset_check_evaluations() if e.check_name == "schema")
    assert schema.passed is False
    assert "missing required column(s) value" in schema.metadata["reasons"].value
    assert str(bad) in schema.metadata["reasons"].value
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {key("raw_readings")}
    assert platform.instance.get_latest_materialization_event(key("stg_readings")) == stg_before
    # The landed file is untouched and none of its rows entered the warehouse.
    assert bad.exists()
    count = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE source_file = '{bad}'")
    assert count[0][0] == 0


def test_reloading_a_partition_never_duplicates_rows(platform):
    day = FIRST_DAY.isoformat()
    before = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE partition_date = '{day}'")
    platform.ingest(FIRST_DAY, FIRST_DAY)
    after = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE partition_date = '{day}'")
    assert before == after and after[0][0] > 0
    assert latest_metadata(platform.instance, key("raw_readings"))["dagster/row_count"] == after[0][0]


def test_a_bad_file_or_entity_is_quarantined_whole_and_the_others_go_on(platform):
    day = FIRST_DAY + dt.timedelta(days=5)
    landed = land_days(platform, day, 1)[0]
    frame = pd.read_csv(landed, dtype=str)
    landed.unlink()
    sensors = sorted(frame["sensor_id"].unique())
    # One file per pair of sensors; the second file is mostly out of range (a broken export),
    # and in the third, one sensor reads out of range every 15th time (7% of its rows; 3.5% of
    # its file's).
    files = {}
    for i in range(0, len(sensors), 2):
        part = frame[frame["sensor_id"].isin(sensors[i : i + 2])].copy()
        if i == 2:
            part.loc[part.index[: int(len(part) * 0.6)], "value"] = "5000"
        if i == 4:
            broken = part.index[part["sensor_id"] == sensors[4]][::15]
            part.loc[broken, "value"] = "5000"
        path = platform.landing / f"readings_{day.isoformat()}_part{i // 2}.csv"
        part.to_csv(path, index=False)
        files[i // 2] = (path, part)

    result = platform.ingest(day, day)
    assert result.success  # the good files and sensors go on
    checks = {
        e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == key("raw_readings")
    }
    assert checks["bad_share"].passed is True
    isolated = checks["bad_sources"]
    assert isolated.passed is False and isolated.severity.value == "WARN"
    bad_file, bad_sensor = str(files[1][0]), sensors[4]
    assert f"file {bad_file} on {day.isoformat()}" in isolated.description
    assert f"entity {bad_sensor} on {day.isoformat()}" in isolated.description
    assert "range:value" in isolated.description and "quarantined whole" in isolated.description
    table = isolated.metadata["isolated"].value
    assert bad_file in table and bad_sensor in table

    staged = dict(
        _rows(
            platform,
            f"""SELECT sensor_id, count(*) FROM {USE_CASE}.stg_readings
                WHERE partition_date = '{day.isoformat()}' GROUP BY 1""",
        )
    )
    assert staged == {s: 288 for s in (sensors[0], sensors[1], sensors[5])}
    reasons = dict(
        _rows(
            platform,
            f"""SELECT reject_reason, count(*) FROM {USE_CASE}.readings_quarantine
                WHERE partition_date = '{day.isoformat()}' GROUP BY 1""",
        )
    )
    bad_rows = int(len(files[1][1]) * 0.6)
    assert reasons["bad_file"] == len(files[1][1]) - bad_rows
    assert reasons["bad_entity"] == 288 - len(range(0, 288, 15))
    assert reasons["range:value"] == bad_rows + len(range(0, 288, 15))
    # Nothing is lost: every landed row is staged or quarantined.
    assert sum(staged.values()) + sum(reasons.values()) == len(frame)


def test_staging_a_day_whose_quarantine_was_never_built_fails_saying_how_to_build_it(platform):
    day = FIRST_DAY + dt.timedelta(days=6)  # a day no other test of this module lands
    land_days(platform, day, 1)
    platform.materialize(["raw_readings"], partition_key=day.isoformat())
    result = platform.materialize(["stg_readings"], partition_key=day.isoformat(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert f"needs {USE_CASE}/readings_quarantine for {day.isoformat()}, never materialized" in message
    assert f"--partition-range {day.isoformat()}...{day.isoformat()}" in message
    assert "raw_readings" not in message.split("build it first")[0]  # raw was built: not named
    staged = _rows(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings WHERE timestamp::DATE = '{day}'")
    assert staged == [(0,)]

    # Features of the same day: staging was never built either, so they name it and how to build it.
    features = platform.materialize(["features"], partition_key=day.isoformat(), raise_on_error=False)
    (failure,) = [e for e in features.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"{USE_CASE}/features needs {USE_CASE}/stg_readings for {day.isoformat()}")
    assert f"--select '{USE_CASE}/stg_readings'" in message


def test_a_partition_run_of_dbt_parses_only_what_it_changed(platform):
    """dbt starts from this home's last parse and parses again only the models that read the run's
    partition bounds (dbt parsed the whole project on every partition run when they were vars)."""
    runs = []
    for offset in (0, 1):  # other bounds each time
        day = (FIRST_DAY + dt.timedelta(days=offset)).isoformat()
        result = platform.materialize(["stg_readings"], partition_key=day)
        assert result.success
        runs += list((DBT_PROJECT_DIR / "target").glob(f"run-{result.run_id[:8]}-*"))
    assert len(runs) == 2
    for run in runs:
        log = (run / "dbt.log").read_text()
        assert "Unable to do partial parsing" not in log
        changed = re.findall(r"Partial parsing: updated file: \S+/(\S+\.sql)", log)
        assert changed and all("__stg_" in name for name in changed)  # the generated staging models
    assert (platform.settings.home / "dbt_partial_parse.msgpack").exists()


def test_dbt_builds_in_the_step_and_leaves_the_warehouse_to_other_processes(platform):
    """dbt runs in the step's own process and closes the warehouse after it (DuckDB lets one process
    write a file); a failing dbt test fails the step with dbt's own message, and the model it
    built is still recorded as materialized."""
    day, other_day = FIRST_DAY + dt.timedelta(days=1), FIRST_DAY
    table = f"{USE_CASE}.stg_readings"
    with platform.defs.resources["warehouse"].get_connection() as conn:  # a key twice, on another day
        conn.sql(f"INSERT INTO {table} SELECT * FROM {table} WHERE timestamp::DATE = '{other_day}' LIMIT 1")

    result = platform.materialize(["stg_readings"], partition_key=day.isoformat(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "unique_combination" in message and "dbt's full log:" in message
    assert [m.asset_key for m in result.get_asset_materialization_events()] == [key("stg_readings")]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and not checks.pop(next(c for c in checks if c.startswith("unique_combination")))
    assert all(checks.values())

    writer = f"import duckdb; duckdb.connect({str(platform.settings.warehouse_path)!r}).sql('CHECKPOINT')"
    other = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr[-500:]

    assert platform.materialize(["stg_readings"], partition_key=other_day.isoformat()).success  # mended
    assert _rows(platform, f"SELECT count(*) - count(DISTINCT (sensor_id, timestamp)) FROM {table}") == [(0,)]
