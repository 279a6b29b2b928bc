"""The bad-input matrix: each kind of bad landed file has its documented outcome, and loses nothing.

Documented outcomes (README, "Bad input"): rows that break a rule are quarantined with the rule
and the run goes on; a file that cannot be read as a whole (wrong columns, empty, junk) fails
the blocking `schema` check and nothing downstream materializes. Either way the message names
the file, no bad row reaches `stg_readings` or `features`, the landed file is unchanged, and
staged rows plus quarantined rows equal the input rows.
"""

import datetime as dt
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ml_platform.ingestion.landing import file_sha256
from ml_platform.metadata import latest_metadata
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generate_day

from .conftest import USE_CASE, day_range_tags, key, make_platform

GOOD_DAYS = 2
# Whole days in the past: a day still running would put its later readings in the future.
FIRST_DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)


@dataclass(frozen=True)
class Case:
    name: str
    write: Callable[[Path, pd.DataFrame], None]  # writes the bad file from a clean day
    reasons: dict[str, int] | None  # quarantined rows by reason; None: the file is rejected
    cause: str = ""  # for rejected files: words the schema check's message must contain


def _csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def wrong_names(path, frame):
    _csv(frame.rename(columns={"value": "reading", "sensor_id": "sensor"}), path)


def wrong_types(path, frame):
    frame.loc[[3, 7], "value"] = "twelve"
    frame.loc[11, "timestamp"] = "31/12/2026 noon"
    frame.loc[12, "vibration"] = "inf"
    _csv(frame, path)


def truncated(path, frame):
    text = frame.to_csv(index=False)
    path.write_text(text[: text.rstrip("\n").rfind(",")])  # the last line loses its last field


def empty(path, frame):
    path.write_bytes(b"")


def not_utf8(path, frame):
    lines = frame.to_csv(index=False).encode().split(b"\n")
    lines[5] = lines[5].replace(b"s-", b"s\xff\xfe-")
    path.write_bytes(b"\n".join(lines))


def duplicates(path, frame):
    _csv(pd.concat([frame, frame.iloc[[0, 1, 2]]], ignore_index=True), path)


def nulls(path, frame):
    frame.loc[[1, 2], "value"] = None
    frame.loc[3, "sensor_id"] = None
    frame.loc[4, "timestamp"] = ""
    _csv(frame, path)


def out_of_range(path, frame):
    frame.loc[[5, 6], "value"] = "1e6"
    frame.loc[7, "temperature"] = "-300"
    _csv(frame, path)


def future(path, frame):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    frame.loc[[8, 9], "timestamp"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    _csv(frame, path)


def before_the_floor(path, frame):
    frame.loc[[10, 11], "timestamp"] = "2019-06-01T00:00:00Z"  # before partitions_start (2025)
    _csv(frame, path)


def junk_gigabyte(path, frame):
    with path.open("wb") as handle:
        for _ in range(1024):
            handle.write(os.urandom(1 << 20))


CASES = [
    Case("wrong_column_names", wrong_names, None, "missing required column(s) sensor_id, value"),
    Case("wrong_types", wrong_types, {"type:value": 2, "type:timestamp": 1, "type:vibration": 1}),
    Case("truncated_csv", truncated, {"parse:MISSING COLUMNS": 1}),
    Case("empty_file", empty, None, "empty"),
    Case("non_utf8_bytes", not_utf8, {"parse:INVALID ENCODING": 1}),
    Case("duplicate_keys", duplicates, {"duplicate_key": 3}),
    Case("nulls", nulls, {"not_null:value": 2, "not_null:sensor_id": 1, "not_null:timestamp": 1}),
    Case("out_of_range", out_of_range, {"range:value": 2, "range:temperature": 1}),
    Case("future_timestamps", future, {"future:timestamp": 2}),
    Case("timestamps_before_the_floor", before_the_floor, {"too_old:timestamp": 2}),
    Case("junk_1gb", junk_gigabyte, None, "cannot be parsed"),
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    platform = make_platform(tmp_path_factory.mktemp("bad-input-home"))
    config = SensorDataConfig(sensors=3)
    platform.landing.mkdir(parents=True)
    for offset in range(GOOD_DAYS):
        day = FIRST_DAY + dt.timedelta(days=offset)
        generate_day(day, config)[0].to_csv(platform.landing / f"readings_{day}.csv", index=False)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=GOOD_DAYS - 1), labels=False)
    platform.config = config
    return platform


def _count(platform, sql: str) -> int:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(sql).fetchall()[0][0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_has_its_documented_outcome(platform, case):
    day = FIRST_DAY + dt.timedelta(days=GOOD_DAYS + CASES.index(case))
    frame = generate_day(day, platform.config)[0].astype(str)
    path = platform.landing / f"{case.name}_{day}.csv"
    case.write(path, frame.copy())
    sha_before = file_sha256(path)

    result = platform.ingest(day, day, labels=False, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    source = f"source_file = '{path}'"

    if case.reasons is None:
        assert not result.success
        assert checks["schema"].passed is False
        message = checks["schema"].metadata["reasons"].value
        assert str(path) in message and case.cause in message
        assert materialized == {key("raw_readings")}  # blocked before quarantine and staging
        assert _count(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE {source}") == 0
    else:
        assert result.success
        quarantined = dict(
            _rows(
                platform,
                f"SELECT reject_reason, count(*) FROM {USE_CASE}.readings_quarantine"
                f" WHERE {source} GROUP BY 1",
            )
        )
        assert quarantined == case.reasons
        sample = " ".join(
            checks[c].metadata["sample"].value for c in checks if "sample" in checks[c].metadata
        )
        assert path.name in sample
        staged = _count(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings WHERE {source}")
        input_rows = _count(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE {source}")
        assert staged + sum(quarantined.values()) == input_rows
        assert input_rows == _input_rows(path)
        bad_staged = _count(
            platform,
            f"""SELECT count(*) FROM {USE_CASE}.stg_readings s JOIN {USE_CASE}.readings_quarantine q
                USING (source_file, source_row) WHERE s.{source}""",
        )
        assert bad_staged == 0
    assert file_sha256(path) == sha_before


def _rows(platform, sql: str) -> list[tuple]:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(sql).fetchall()


def _input_rows(path: Path) -> int:
    """Data lines of a CSV (the header and a missing final newline aside)."""
    return len([line for line in path.read_bytes().split(b"\n")[1:] if line.strip()])


def test_no_quarantined_row_reaches_features(platform):
    last = FIRST_DAY + dt.timedelta(days=GOOD_DAYS + len(CASES) - 1)
    platform.materialize(["features"], tags=day_range_tags(FIRST_DAY, last))
    features = latest_metadata(platform.instance, key("features"))["dagster/row_count"]
    staged = _count(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings")
    assert features == staged
    leaked = _count(
        platform,
        f"""SELECT count(*) FROM {USE_CASE}.features f JOIN {USE_CASE}.readings_quarantine q
            ON f.sensor_id = q.sensor_id AND f.event_timestamp = TRY_CAST(q."timestamp" AS TIMESTAMPTZ)
            WHERE q.reject_reason LIKE 'range:%' OR q.reject_reason LIKE 'type:%'""",
    )
    assert leaked == 0


def _mixed_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A day with a few bad rows of each row-level kind (types, nulls, range, future, a repeat)."""
    frame.loc[[3, 7], "value"] = "twelve"
    frame.loc[1, "value"] = None
    frame.loc[5, "value"] = "5000"
    frame.loc[8, "timestamp"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return pd.concat([frame, frame.iloc[[20]]], ignore_index=True)


MIXED_REASONS = {
    "type:value": 2,
    "not_null:value": 1,
    "range:value": 1,
    "future:timestamp": 1,
    "duplicate_key": 1,
}


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> int:
    """``frame`` in format ``fmt``; the number of data rows or lines written."""
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
        return len(frame)
    if fmt.startswith("jsonl"):
        text = frame.to_json(orient="records", lines=True) + '{"sensor_id": "s-1", not json\n'
        rows = len(frame) + 1
    else:
        text, rows = frame.to_csv(index=False), len(frame)
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if fmt.endswith(".gz") else data)
    return rows


FORMATS = ["csv.gz", "parquet", "jsonl", "jsonl.gz"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_landed_format_quarantines_the_same_bad_rows(platform, fmt):
    day = FIRST_DAY + dt.timedelta(days=GOOD_DAYS + len(CASES) + FORMATS.index(fmt))
    frame = _mixed_bad_rows(generate_day(day, platform.config)[0].astype(str))
    path = platform.landing / f"mixed_{day}.{fmt}"
    written = _write(frame, path, fmt)
    sha_before = file_sha256(path)

    result = platform.ingest(day, day, labels=False, raise_on_error=False)
    assert result.success
    source = f"source_file = '{path}'"
    quarantined = dict(
        _rows(
            platform,
            f"SELECT reject_reason, count(*) FROM {USE_CASE}.readings_quarantine WHERE {source} GROUP BY 1",
        )
    )
    expected = {**MIXED_REASONS, **({"parse:INVALID JSON": 1} if fmt.startswith("jsonl") else {})}
    assert quarantined == expected
    staged = _count(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings WHERE {source}")
    assert staged + sum(quarantined.values()) == written
    assert file_sha256(path) == sha_before


def test_a_column_added_to_the_landed_files_is_flagged_by_the_schema_change_check(tmp_path):
    """Dagster's column-schema-change check compares the columns the sources delivered between
    two materializations of the raw table: a new column shows, named."""
    import dagster as dg

    platform = make_platform(tmp_path / "home")
    first = FIRST_DAY
    frame = generate_day(first, SensorDataConfig(sensors=2, days=1, start=first))[0]
    landing = platform.landing
    landing.mkdir(parents=True, exist_ok=True)
    frame.to_csv(landing / f"readings_{first}.csv", index=False)
    checks = [
        c for c in platform.defs.asset_checks if key("raw_readings") in {k.asset_key for k in c.check_keys}
    ]
    schema_checks = [c for c in checks if any("schema_change" in k.name for k in c.check_keys)]
    assert schema_checks

    def ingest(day):
        return dg.materialize(
            [*platform.defs.assets, *schema_checks],
            selection=[key("raw_readings")],
            instance=platform.instance,
            resources=platform.defs.resources,
            tags=day_range_tags(day, day),
        )

    ingest(first)
    second = first + dt.timedelta(days=1)
    later = generate_day(second, SensorDataConfig(sensors=2, days=1, start=second))[0]
    later.assign(humidity=40.0).to_csv(landing / f"readings_{second}.csv", index=False)
    result = ingest(second)
    (change,) = [e for e in result.get_asset_check_evaluations() if "schema_change" in e.check_name]
    assert change.passed is False and "humidity" in str(change.metadata) + str(change.description)


def test_a_csv_with_a_byte_order_mark_lands_whole(platform):
    """Spreadsheet exports start with a UTF-8 byte order mark: the header still names the columns."""
    day = FIRST_DAY + dt.timedelta(days=GOOD_DAYS + len(CASES) + len(FORMATS))  # a day of its own
    path = platform.landing / f"excel_export_{day}.csv"
    path.write_bytes(generate_day(day, platform.config)[0].to_csv(index=False).encode("utf-8-sig"))
    result = platform.ingest(day, day, labels=False, raise_on_error=False)
    assert result.success
    source = f"source_file = '{path}'"
    staged = _count(platform, f"SELECT count(*) FROM {USE_CASE}.stg_readings WHERE {source}")
    assert staged == _input_rows(path) > 0


def test_a_truncated_gzip_file_is_rejected_naming_it(platform):
    """A .csv.gz cut short (a copy that did not finish) cannot be read whole: like the other
    unreadable files it fails the blocking schema check, named, nothing of it is staged, and the
    landed file is left as it was."""
    day = FIRST_DAY + dt.timedelta(days=GOOD_DAYS + len(CASES) + len(FORMATS) + 1)
    frame = generate_day(day, platform.config)[0]
    path = platform.landing / f"cut_{day}.csv.gz"
    whole = gzip.compress(frame.to_csv(index=False).encode())
    path.write_bytes(whole[: len(whole) // 2])
    sha_before = file_sha256(path)
    result = platform.ingest(day, day, labels=False, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not result.success and checks["schema"].passed is False
    assert str(path) in checks["schema"].metadata["reasons"].value
    source = f"source_file = '{path}'"
    assert _count(platform, f"SELECT count(*) FROM {USE_CASE}.raw_readings WHERE {source}") == 0
    assert file_sha256(path) == sha_before
