"""Sources -> the raw table: one row per input row, in its own daily partition, with provenance.

Loading days ``first..last`` deletes exactly those days' rows and inserts them again from what the
sources hold now, in one transaction: loading the same file twice never duplicates a row, a late
file for an old day lands in that day, and a file whose content changed replaces its old rows.

Everything is pushed down into DuckDB (its parallel CSV reader, set-based partition assignment),
so a file is never held in Python memory. An index of landed files (size, mtime, sha256, days)
lets a partition run skip the files that hold none of its days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ml_platform.ingestion.landing import (
    LandingFileError,
    days_in_name,
    file_sha256,
    inspect_file,
    list_landing_files,
    stage_file,
)
from ml_platform.spec import LandingFiles, UseCaseSpec
from ml_platform.validation.rules import parsed

PROVENANCE_COLUMNS = ("source_file", "source_row", "file_sha256", "ingested_at", "parse_error", "raw_line")


@dataclass(frozen=True)
class RejectedFile:
    path: str
    sha256: str
    reason: str
    days: tuple[str, ...]


@dataclass
class RawLoad:
    rows_by_day: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # source -> sha256 of what was loaded
    rejected: list[RejectedFile] = field(default_factory=list)
    columns_seen: dict[str, set[str]] = field(default_factory=dict)  # source -> its column names

    @property
    def row_count(self) -> int:
        return sum(self.rows_by_day.values())


def raw_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_readings"


def index_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.landed_files"


def ensure_raw_tables(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> None:
    columns = ", ".join(f'"{c}" VARCHAR' for c in spec.column_names)
    conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {raw_table(spec)} (
            partition_date DATE, {columns}, source_file VARCHAR, source_row BIGINT,
            file_sha256 VARCHAR, ingested_at TIMESTAMPTZ, parse_error VARCHAR, raw_line VARCHAR)"""
    )
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {index_table(spec)} (
            path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, sha256 VARCHAR,
            first_day DATE, last_day DATE, rows BIGINT, error VARCHAR, indexed_at TIMESTAMPTZ)"""
    )


def last_valid_day() -> dt.date:
    """The newest daily partition: today (UTC), which is still filling."""
    return dt.datetime.now(dt.UTC).date()


def place_rows(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, staged: str, fallback_day: str | None
) -> str:
    """Create temp table ``placed``: the staged rows with their ``partition_date``.

    A row goes to the UTC day of its timestamp. A row whose timestamp does not parse, or whose
    day has no partition (before the first, or in the future), goes to the first valid day of
    its source (else the day in the file name), so that it is quarantined exactly once rather
    than lost.
    """
    ts = parsed(spec.timestamp, "timestamp")
    fallback = f"DATE '{fallback_day}'" if fallback_day else "NULL::DATE"
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE placed AS
            WITH days AS (
                SELECT *, CAST(timezone('UTC', {ts}) AS DATE) AS event_day FROM {staged}
            ), valid AS (
                SELECT *, CASE WHEN event_day BETWEEN DATE '{spec.partitions_start}'
                    AND DATE '{last_valid_day().isoformat()}' THEN event_day END AS valid_day
                FROM days
            )
            SELECT * EXCLUDE (event_day, valid_day),
                COALESCE(valid_day, min(valid_day) OVER (), {fallback}) AS partition_date
            FROM valid"""
    )
    return "placed"


def _insert_placed(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    source: str,
    sha: str,
    ingested_at: dt.datetime,
    first_day: dt.date,
    last_day: dt.date,
) -> int:
    columns = ", ".join(f'"{c}"' for c in spec.column_names)
    before = conn.sql(f"SELECT count(*) FROM {raw_table(spec)}").fetchall()[0][0]
    conn.sql(
        f"""INSERT INTO {raw_table(spec)} (partition_date, {columns}, source_file, source_row,
                file_sha256, ingested_at, parse_error, raw_line)
            SELECT partition_date, {columns}, ?, source_row, ?, ?, parse_error, raw_line
            FROM placed WHERE partition_date BETWEEN ? AND ?""",
        params=[source, sha, ingested_at, first_day, last_day],
    )
    return conn.sql(f"SELECT count(*) FROM {raw_table(spec)}").fetchall()[0][0] - before


def _overlaps(days: tuple[str, ...] | tuple[dt.date, dt.date], first: dt.date, last: dt.date) -> bool:
    values = [d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in days if d]
    if not values:
        return False
    return min(values) <= last and max(values) >= first


def _index(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> dict[str, tuple]:
    rows = conn.sql(
        f"SELECT path, size, mtime_ns, sha256, first_day, last_day, error FROM {index_table(spec)}"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _record(conn, spec: UseCaseSpec, path: Path, sha: str, days, rows: int, error: str | None) -> None:
    stat = path.stat()
    conn.sql(
        f"""INSERT OR REPLACE INTO {index_table(spec)} VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())""",
        params=[str(path), stat.st_size, stat.st_mtime_ns, sha, days[0], days[1], rows, error],
    )


def _load_landing_files(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    landing_dir: Path,
    first_day: dt.date,
    last_day: dt.date,
    load: RawLoad,
    ingested_at: dt.datetime,
) -> None:
    index = _index(conn, spec)
    for path in list_landing_files(landing_dir):
        stat = path.stat()
        known = index.get(str(path))
        unchanged = known is not None and (known[0], known[1]) == (stat.st_size, stat.st_mtime_ns)
        name_days = days_in_name(path)
        if unchanged and known[5] is None and not _overlaps((known[3], known[4]), first_day, last_day):
            continue  # indexed, readable and none of its days is being loaded
        if unchanged and known[5] is not None:
            # A file already found unreadable is not read again until it changes.
            if not name_days or _overlaps(name_days, first_day, last_day):
                load.rejected.append(RejectedFile(str(path), known[2], known[5], name_days))
            continue
        sha = file_sha256(path)
        try:
            schema = inspect_file(conn, path)
            missing = [c for c in spec.required_columns if c not in schema.columns]
            if missing:
                raise LandingFileError(f"{path}: missing required column(s) {', '.join(missing)}")
            stage_file(conn, path, schema, spec.column_names, "staged_file")
            place_rows(conn, spec, "staged_file", name_days[0] if name_days else None)
            low, high, rows, unplaced = conn.sql(
                "SELECT min(partition_date), max(partition_date), count(*),"
                " count(*) FILTER (WHERE partition_date IS NULL) FROM placed"
            ).fetchall()[0]
            if unplaced:
                raise LandingFileError(
                    f"{path}: no row has a timestamp inside the partitions and the file name holds"
                    " no date (YYYY-MM-DD), so its rows cannot be placed in a day"
                )
        except LandingFileError as exc:
            _record(conn, spec, path, sha, (None, None), 0, str(exc))
            if not name_days or _overlaps(name_days, first_day, last_day):
                load.rejected.append(RejectedFile(str(path), sha, str(exc), name_days))
            continue
        _record(conn, spec, path, sha, (low, high), rows, None)
        load.columns_seen[str(path)] = set(schema.columns)
        if (
            low is not None
            and _overlaps((low, high), first_day, last_day)
            and _insert_placed(conn, spec, str(path), sha, ingested_at, first_day, last_day)
        ):
            load.files[str(path)] = sha


def _load_pulled(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    name: str,
    table: pa.Table,
    first_day: dt.date,
    last_day: dt.date,
    load: RawLoad,
    ingested_at: dt.datetime,
) -> None:
    """Rows pulled from a database or an API: staged from Arrow, placed and inserted like a file."""
    from ml_platform.ingestion.pull import content_sha256

    conn.register("pulled_rows", table)
    try:
        present = set(table.column_names)
        selected = ", ".join(
            f'CAST("{c}" AS VARCHAR) AS "{c}"' if c in present else f'NULL::VARCHAR AS "{c}"'
            for c in spec.column_names
        )
        conn.sql(
            f"""CREATE OR REPLACE TEMP TABLE staged_pull AS
                SELECT {selected}, source_row, NULL::VARCHAR AS parse_error, NULL::VARCHAR AS raw_line
                FROM pulled_rows"""
        )
    finally:
        conn.unregister("pulled_rows")
    place_rows(conn, spec, "staged_pull", first_day.isoformat())
    sha = content_sha256(table)
    load.columns_seen[name] = set(table.column_names) - {"source_row"}
    if _insert_placed(conn, spec, name, sha, ingested_at, first_day, last_day):
        load.files[name] = sha


def load_raw_partitions(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    landing_dir: Path,
    first_day: dt.date,
    last_day: dt.date,
) -> RawLoad:
    """Replace the raw rows of days ``first_day..last_day`` with what the sources hold now."""
    from ml_platform.ingestion.pull import pull

    ensure_raw_tables(conn, spec)
    load = RawLoad()
    ingested_at = dt.datetime.now(dt.UTC)
    # Pull from remote sources before the transaction, so it holds no lock while waiting on them.
    window = (
        dt.datetime.combine(first_day, dt.time(), tzinfo=dt.UTC),
        dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC),
    )
    pulled = [pull(source, spec, *window) for source in spec.sources if not isinstance(source, LandingFiles)]
    conn.begin()
    try:
        conn.sql(
            f"DELETE FROM {raw_table(spec)} WHERE partition_date BETWEEN ? AND ?",
            params=[first_day, last_day],
        )
        for source in spec.sources:
            if isinstance(source, LandingFiles):
                _load_landing_files(conn, spec, landing_dir, first_day, last_day, load, ingested_at)
        for name, table in pulled:
            _load_pulled(conn, spec, name, table, first_day, last_day, load, ingested_at)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    for day, count in conn.sql(
        f"""SELECT CAST(partition_date AS VARCHAR), count(*) FROM {raw_table(spec)}
            WHERE partition_date BETWEEN ? AND ? GROUP BY 1 ORDER BY 1""",
        params=[first_day, last_day],
    ).fetchall():
        load.rows_by_day[day] = count
    return load


def file_days(path: Path, spec: UseCaseSpec) -> list[str]:
    """The daily partitions a landed file has rows for, read in a private in-memory DuckDB."""
    from ml_platform.resources.platform import configure_connection

    with duckdb.connect() as conn:
        configure_connection(conn, "512MB")
        try:
            schema = inspect_file(conn, path)
            if spec.timestamp not in schema.columns:
                return list(days_in_name(path))
            stage_file(conn, path, schema, spec.column_names, "staged_file")
            name_days = days_in_name(path)
            place_rows(conn, spec, "staged_file", name_days[0] if name_days else None)
            days = conn.sql(
                "SELECT DISTINCT CAST(partition_date AS VARCHAR) FROM placed"
                " WHERE partition_date IS NOT NULL ORDER BY 1"
            ).fetchall()
        except LandingFileError:
            return list(days_in_name(path))
    return [d[0] for d in days] or list(days_in_name(path))
