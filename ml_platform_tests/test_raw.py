"""The raw table: typed rows numbered as in their file, text kept where a value does not parse,
provenance stored once per source, and warehouses of the earlier text layout upgraded in place."""

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from ml_platform.ingestion.landing import file_sha256, typing_in_sql
from ml_platform.ingestion.raw import (
    ensure_raw_tables,
    load_raw_partitions,
    raw_table,
    rows_table,
    sources_table,
)
from ml_platform.resources.platform import configure_connection
from ml_platform.usecases import get_use_case
from ml_platform.validation.summary import record_rejects, summarize, write_quarantine

SPEC = get_use_case("sensor_anomaly")
DAY = dt.date(2026, 1, 5)
# Enough rows (~75 MB) for DuckDB's CSV reader to split the file between threads.
LARGE_ROWS = 2_500_000


@pytest.fixture
def conn(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        configure_connection(conn, "1GB")
        yield conn


def _landing(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing


def _rows(conn, sql: str) -> list[tuple]:
    return conn.sql(sql).fetchall()


@pytest.mark.parametrize("bad_rows", [(), (1, 400_000, 1_200_001, 1_200_002, LARGE_ROWS)])
def test_every_row_of_a_large_csv_keeps_its_line_number(tmp_path, conn, bad_rows):
    """Each data row's value is its row number; rows in ``bad_rows`` have one field too many."""
    path = _landing(tmp_path) / f"readings_{DAY}.csv"
    bad = set(bad_rows)
    with path.open("w") as handle:
        handle.write("sensor_id,timestamp,value\n")
        handle.writelines(
            f"s-{n % 7},{DAY}T12:00:00Z,{n}{',extra' if n in bad else ''}\n" for n in range(1, LARGE_ROWS + 1)
        )

    load = load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)

    assert load.row_count == LARGE_ROWS
    table = raw_table(SPEC)
    misnumbered = _rows(
        conn,
        f"SELECT count(*) FROM {table} WHERE parse_error IS NULL AND CAST(value AS BIGINT) <> source_row",
    )
    assert misnumbered == [(0,)]
    rejected = _rows(
        conn, f"SELECT source_row, parse_error FROM {table} WHERE parse_error IS NOT NULL ORDER BY 1"
    )
    assert rejected == [(n, "TOO MANY COLUMNS") for n in sorted(bad)]
    numbers = _rows(conn, f"SELECT count(DISTINCT source_row), min(source_row), max(source_row) FROM {table}")
    assert numbers == [(LARGE_ROWS, 1, LARGE_ROWS)]


def test_a_value_that_does_not_parse_is_null_not_a_failed_file(tmp_path, conn):
    """Guards against DuckDB pushing TRY_CAST into the CSV reader as a hard cast (duckdb#23818)."""
    path = tmp_path / "one_column.csv"
    path.write_text("x\n1\nnope\n2\n")
    with typing_in_sql(conn):
        values = _rows(conn, f"SELECT TRY_CAST(x AS DOUBLE) FROM read_csv('{path}', all_varchar=true)")
    assert values == [(1.0,), (None,), (2.0,)]
    assert _rows(conn, "SELECT current_setting('disabled_optimizers')") == [("",)]  # restored


def _write_small_csv(path: Path) -> None:
    path.write_text(
        "sensor_id,timestamp,value,temperature\n"
        f"s-1,{DAY}T00:00:00Z,1.5,40\n"
        f"s-2,{DAY}T00:01:00Z,abc,40\n"
        f"s-3,{DAY}T00:02:00Z,nan,\n"
        "s-4,not-a-time,2,40\n"
        f"s-5,{DAY}T03:00:00+02:00,3,hot\n"
        f"s-6,{DAY}T00:04:00Z,,41\n"
    )


def test_values_are_typed_and_a_value_that_does_not_parse_keeps_its_text(tmp_path, conn):
    path = _landing(tmp_path) / f"readings_{DAY}.csv"
    _write_small_csv(path)
    load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)
    rows = _rows(
        conn,
        f"""SELECT source_row, sensor_id, "timestamp", value, temperature, raw_text
            FROM {raw_table(SPEC)} ORDER BY source_row""",
    )
    types = _rows(conn, f"SELECT column_name, column_type FROM (DESCRIBE {raw_table(SPEC)})")
    assert {"timestamp": "TIMESTAMP WITH TIME ZONE", "value": "DOUBLE"}.items() <= dict(types).items()
    by_row = {r[0]: r[1:] for r in rows}
    utc = dt.UTC
    assert by_row[1] == ("s-1", dt.datetime(2026, 1, 5, tzinfo=utc), 1.5, 40.0, None)
    assert by_row[2][2] is None and json.loads(by_row[2][4])["value"] == "abc"
    assert by_row[3][2] != by_row[3][2] and by_row[3][4] is None  # NaN parses: a type rule catches it
    assert by_row[4][1] is None and json.loads(by_row[4][4])["timestamp"] == "not-a-time"
    assert by_row[5][1] == dt.datetime(2026, 1, 5, 1, tzinfo=utc)  # the offset is honoured
    assert json.loads(by_row[5][4])["temperature"] == "hot"
    assert by_row[6][2] is None and by_row[6][4] is None  # absent, not unparseable

    record_rejects(conn, SPEC, DAY, DAY)
    summary = summarize(conn, SPEC, DAY, DAY)
    assert summary.rejected_by_reason == {
        "type:value": 2,
        "type:timestamp": 1,
        "type:temperature": 1,
        "not_null:value": 1,
        "bad_file": 1,  # 5 of the file's 6 rows are bad: its one good row is quarantined with it
    }
    table = write_quarantine(conn, SPEC, DAY, DAY)
    shown = dict(_rows(conn, f"SELECT source_row, raw_text FROM {table} WHERE reject_reason = 'type:value'"))
    assert json.loads(shown[2])["value"] == "abc"


def test_provenance_is_one_source_per_loaded_file_version(tmp_path, conn):
    path = _landing(tmp_path) / f"readings_{DAY}.csv"
    _write_small_csv(path)
    load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)
    load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)  # the same file again: replaced, not doubled
    path.write_text(path.read_text() + f"s-7,{DAY}T00:05:00Z,7,42\n")  # changed under the same name
    load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)

    assert _rows(conn, f"SELECT count(*) FROM {raw_table(SPEC)}") == [(7,)]
    provenance = _rows(
        conn, f"SELECT DISTINCT source_file, file_sha256, ingested_at IS NOT NULL FROM {raw_table(SPEC)}"
    )
    assert provenance == [(str(path), file_sha256(path), True)]
    # Sources whose rows were replaced are gone: every source is some row's provenance.
    assert _rows(conn, f"SELECT count(*) FROM {sources_table(SPEC)}") == [(1,)]
    assert _rows(conn, f"SELECT count(*) FROM {rows_table(SPEC)}") == [(7,)]


# The DDL of the earlier layout, where raw_readings was a table of text.
TEXT_LAYOUT = """
CREATE SCHEMA sensor_anomaly;
CREATE TABLE sensor_anomaly.raw_readings (partition_date DATE, "sensor_id" VARCHAR, "timestamp" VARCHAR,
    "value" VARCHAR, "temperature" VARCHAR, "vibration" VARCHAR, source_file VARCHAR, source_row BIGINT,
    file_sha256 VARCHAR, ingested_at TIMESTAMPTZ, parse_error VARCHAR, raw_line VARCHAR);
CREATE TABLE sensor_anomaly.raw_rejects (partition_date DATE, source_file VARCHAR, source_row BIGINT,
    reject_reason VARCHAR);
INSERT INTO sensor_anomaly.raw_readings VALUES
    ('2026-01-05', 's-1', '2026-01-05T00:00:00Z', '1.5', NULL, NULL, 'a.csv', 1, 'sha-a', '2026-01-06',
        NULL, NULL),
    ('2026-01-05', 's-2', '2026-01-05T00:01:00Z', 'abc', NULL, NULL, 'a.csv', 2, 'sha-a', '2026-01-06',
        NULL, NULL),
    ('2026-01-05', NULL, NULL, NULL, NULL, NULL, 'a.csv', 3, 'sha-a', '2026-01-06',
        'MISSING COLUMNS', 's-3,2026'),
    ('2026-01-06', 's-1', '2026-01-06T00:00:00Z', '2.5', '40', NULL, 'b.csv', 1, 'sha-b', '2026-01-07',
        NULL, NULL);
INSERT INTO sensor_anomaly.raw_rejects VALUES
    ('2026-01-05', 'a.csv', 2, 'type:value'), ('2026-01-05', 'a.csv', 3, 'parse:MISSING COLUMNS');
CREATE TABLE sensor_anomaly.readings_quarantine AS
    SELECT r.*, j.reject_reason FROM sensor_anomaly.raw_readings r
    JOIN sensor_anomaly.raw_rejects j USING (partition_date, source_file, source_row);
"""


def test_a_warehouse_of_text_rows_is_upgraded_without_loss(conn):
    conn.sql(TEXT_LAYOUT)
    ensure_raw_tables(conn, SPEC)

    rows = _rows(
        conn,
        f"""SELECT partition_date, source_file, source_row, file_sha256, value, temperature, raw_text,
                parse_error
            FROM {raw_table(SPEC)} ORDER BY partition_date, source_row""",
    )
    day5, day6 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
    assert rows[0] == (day5, "a.csv", 1, "sha-a", 1.5, None, None, None)
    assert rows[1][:6] == (day5, "a.csv", 2, "sha-a", None, None) and json.loads(rows[1][6])["value"] == "abc"
    assert rows[2] == (day5, "a.csv", 3, "sha-a", None, None, "s-3,2026", "MISSING COLUMNS")
    assert rows[3] == (day6, "b.csv", 1, "sha-b", 2.5, 40.0, None, None)
    assert _rows(conn, f"SELECT count(*) FROM {sources_table(SPEC)}") == [(2,)]
    quarantine = _rows(
        conn,
        f"""SELECT source_file, source_row, reject_reason, raw_text
            FROM {SPEC.name}.readings_quarantine ORDER BY source_row""",
    )
    assert quarantine[0][:3] == ("a.csv", 2, "type:value") and json.loads(quarantine[0][3])["value"] == "abc"
    assert quarantine[1] == ("a.csv", 3, "parse:MISSING COLUMNS", "s-3,2026")
    # The upgraded warehouse loads and validates like a new one.
    record_rejects(conn, SPEC, day5, day6)
    assert summarize(conn, SPEC, day5, day6).rejected_by_reason == {
        "type:value": 1,
        "parse:MISSING COLUMNS": 1,
        "bad_file": 1,  # a.csv's day 5 holds 2 bad rows of 3
    }


def test_a_header_naming_a_column_twice_is_rejected_naming_both(tmp_path, conn):
    """SQL ignores case: `value` and `Value` would be one column, and DuckDB renames the second."""
    path = _landing(tmp_path) / f"readings_{DAY}.csv"
    path.write_text(f"sensor_id,timestamp,value,Value\ns-1,{DAY}T00:00:00Z,1,2\n")
    load = load_raw_partitions(conn, SPEC, path.parent, DAY, DAY)
    (rejected,) = load.rejected
    assert rejected.path == str(path) and load.row_count == 0
    assert "header columns value, Value are the same name (column names ignore case)" in rejected.reason
