"""Sources -> the raw table: one typed row per input row, in its own partition, with provenance.

Rows are stored by grain (their UTC day, or hour for hourly partitions: ``partitions.grain``).
Loading grains ``first..last`` deletes exactly those rows and inserts them again from what the
sources hold now, in one transaction: loading the same file twice never duplicates a row, a late
file for an old day lands in that day, and a file whose content changed replaces its old rows.

Layout: ``raw_rows`` holds the typed values, the row's number in its source and ``raw_text`` (the
input as text, kept only for a row that did not parse); ``raw_sources`` holds, once per loaded
source, its file path (or table), sha256 and ingestion time; the view ``raw_<table>`` joins them
into one row per input row with its full provenance. Keeping per-source constants out of the
rows keeps a 10M-row load from writing the same path and hash 10M times.

Everything is pushed down into DuckDB (its parallel readers, set-based placement), so a file is
never held in Python memory. An index of landed files (size, mtime, sha256, days) lets a
partition run skip the files that hold none of its days.
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
    session_setting,
    stage_file,
    typing_in_sql,
)
from ml_platform.partitions import Grain, GrainValue, grain
from ml_platform.spec import LandingFiles, UseCaseSpec
from ml_platform.validation.rules import SQL_TYPES, typed_select


class GrainMismatch(ValueError):
    """The warehouse holds a use case's rows by another grain than its spec now says."""


@dataclass(frozen=True)
class RejectedFile:
    path: str
    sha256: str
    reason: str
    days: tuple[str, ...]


@dataclass
class RawLoad:
    rows_by_grain: dict[str, int] = field(default_factory=dict)  # "2014-05-01" (or "... 05:00:00") -> rows
    files: dict[str, str] = field(default_factory=dict)  # source -> sha256 of what was loaded
    rejected: list[RejectedFile] = field(default_factory=list)
    columns_seen: dict[str, set[str]] = field(default_factory=dict)  # source -> its column names

    @property
    def row_count(self) -> int:
        return sum(self.rows_by_grain.values())


@dataclass(frozen=True)
class Placement:
    """Where a staged source's rows go: their grains, and the grain of rows without a valid one."""

    first: GrainValue | None
    last: GrainValue | None
    rows: int
    fallback: GrainValue | None
    unplaced: int  # rows with no valid grain of their own and no fallback


def raw_table(spec: UseCaseSpec) -> str:
    """The view users and downstream assets read: typed rows with their provenance."""
    return f"{spec.name}.{spec.raw_name}"


def rows_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_rows"


def sources_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_sources"


def index_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.landed_files"


def _table_type(conn: duckdb.DuckDBPyConnection, qualified: str) -> str | None:
    schema, name = qualified.split(".")
    found = conn.sql(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        params=[schema, name],
    ).fetchall()
    return found[0][0] if found else None


def ensure_raw_tables(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> None:
    conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
    if _table_type(conn, raw_table(spec)) == "BASE TABLE":
        _upgrade_text_layout(conn, spec)
        return
    unit = grain(spec)
    _refuse_other_grain(conn, spec, unit)
    columns = ", ".join(f'"{c.name}" {SQL_TYPES[c.dtype]}' for c in spec.columns)
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {rows_table(spec)} (
            {unit.column} {unit.sql_type}, {columns}, source_id INTEGER, source_row BIGINT,
            parse_error VARCHAR, raw_text VARCHAR)"""
    )
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {sources_table(spec)} (
            source_id INTEGER PRIMARY KEY, source_file VARCHAR, file_sha256 VARCHAR,
            ingested_at TIMESTAMPTZ)"""
    )
    selected = ", ".join(f'r."{c}"' for c in spec.column_names)
    conn.sql(
        f"""CREATE OR REPLACE VIEW {raw_table(spec)} AS
            SELECT r.{unit.column}, {selected}, r.source_id, s.source_file, r.source_row,
                s.file_sha256, s.ingested_at, r.parse_error, r.raw_text
            FROM {rows_table(spec)} r JOIN {sources_table(spec)} s USING (source_id)"""
    )
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {index_table(spec)} (
            path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, sha256 VARCHAR,
            first_day DATE, last_day DATE, rows BIGINT, error VARCHAR, indexed_at TIMESTAMPTZ)"""
    )


def _refuse_other_grain(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, unit: Grain) -> None:
    """A warehouse written by day cannot be read by hour (or back): say so before anything runs."""
    schema, name = rows_table(spec).split(".")
    columns = {
        row[0]
        for row in conn.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            params=[schema, name],
        ).fetchall()
    }
    if columns and unit.column not in columns:
        raise GrainMismatch(
            f"{spec.name}: the warehouse stores its raw rows by another grain than "
            f"'partitions: {spec.partitions}' (no column {unit.column} in {rows_table(spec)}); "
            f"drop the schema {spec.name} (DROP SCHEMA {spec.name} CASCADE) and ingest again, "
            "or keep the spec's former partitions"
        )


def _upgrade_text_layout(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> None:
    """Convert a warehouse whose raw view is a table of text (before raw rows were typed).

    Rows are typed by the same expressions as new loads (text kept where a value does not parse),
    each distinct (file, sha256, ingestion time) becomes a source, and the rejects and quarantine
    are carried over to the new row ids: nothing is re-read and nothing is lost.
    """
    from ml_platform.validation.summary import rejected_rows_sql, rejects_table

    old = f"{spec.name}.{spec.raw_name}_text"
    conn.begin()
    try:
        conn.sql(f"ALTER TABLE {raw_table(spec)} RENAME TO {spec.raw_name}_text")
        ensure_raw_tables(conn, spec)
        conn.sql(
            f"""INSERT INTO {sources_table(spec)}
                SELECT row_number() OVER (ORDER BY ingested_at, source_file, file_sha256),
                    source_file, file_sha256, ingested_at
                FROM (SELECT DISTINCT source_file, file_sha256, ingested_at FROM {old})"""
        )
        columns = ", ".join(f't."{c}"' for c in spec.column_names)
        conn.sql(
            f"""INSERT INTO {rows_table(spec)}
                SELECT t.partition_date, {columns}, s.source_id, t.source_row, t.parse_error, t.raw_text
                FROM (SELECT partition_date, source_file, file_sha256, ingested_at, source_row, parse_error,
                        {typed_select(spec, set(spec.column_names), line="raw_line")}
                    FROM {old}) t
                JOIN {sources_table(spec)} s USING (source_file, file_sha256, ingested_at)"""
        )
        if _table_type(conn, rejects_table(spec)):
            conn.sql(
                f"""CREATE OR REPLACE TABLE {rejects_table(spec)} AS
                    SELECT j.partition_date, v.source_id, j.source_row, j.reject_reason
                    FROM {rejects_table(spec)} j
                    JOIN {raw_table(spec)} v USING (partition_date, source_file, source_row)"""
            )
            quarantine = f"{spec.name}.{spec.quarantine_name}"
            if _table_type(conn, quarantine):
                conn.sql(f"DROP TABLE {quarantine}")
                conn.sql(
                    f"CREATE TABLE {quarantine} AS {rejected_rows_sql(spec, 'partition_date IS NOT NULL')}"
                )
        conn.sql(f"DROP TABLE {old}")
        conn.commit()
    except Exception:
        conn.rollback()
        raise


def _valid_grain(spec: UseCaseSpec) -> str:
    """SQL of a staged row's grain when it has a partition: from the first to the current one
    (UTC), which is still filling."""
    unit = grain(spec)
    first = unit.of_time(dt.datetime.fromisoformat(spec.partitions_start))
    newest = unit.of_time(dt.datetime.now(dt.UTC))
    return (
        f"CASE WHEN event_grain BETWEEN {unit.literal(first)} AND {unit.literal(newest)} THEN event_grain END"
    )


def place_staged(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, fallback: str | None) -> Placement:
    """Where the rows of temp table ``staged`` go.

    A row goes to the UTC grain (day or hour) of its timestamp. A row whose timestamp does not
    parse, or whose grain has no partition (before the first, or in the future), goes to the first
    valid grain of its source (else ``fallback``, e.g. the day in the file name), so that it is
    quarantined exactly once rather than lost.
    """
    low, high, rows, invalid = conn.sql(
        f"""SELECT min(valid), max(valid), count(*), count(*) FILTER (WHERE valid IS NULL)
            FROM (SELECT {_valid_grain(spec)} AS valid FROM staged)"""
    ).fetchall()[0]
    place = low or (grain(spec).of_time(dt.datetime.fromisoformat(fallback)) if fallback else None)
    if low is None and invalid and place is not None:
        low = high = place
    return Placement(low, high, rows, place, invalid if place is None else 0)


def _placed_grain(spec: UseCaseSpec, placement: Placement) -> str:
    """SQL of a staged row's grain: its own valid one, else the placement's fallback."""
    unit = grain(spec)
    fallback = unit.literal(placement.fallback) if placement.fallback else f"NULL::{unit.sql_type}"
    return f"coalesce({_valid_grain(spec)}, {fallback})"


def _register_source(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, name: str, sha: str, ingested_at: dt.datetime
) -> int:
    table = sources_table(spec)
    source_id = conn.sql(f"SELECT coalesce(max(source_id), 0) + 1 FROM {table}").fetchall()[0][0]
    conn.sql(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", params=[source_id, name, sha, ingested_at])
    return source_id


def _insert_staged(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    source_id: int,
    source_row: str,
    placement: Placement,
    first: GrainValue,
    last: GrainValue,
) -> int:
    """Insert the staged rows of grains ``first..last``; returns how many."""
    column = grain(spec).column
    columns = ", ".join(f'"{c}"' for c in spec.column_names)
    # Row numbers are computed in the SELECT, so the insert need not keep the staged order: left
    # free, DuckDB writes whole row groups from both threads instead of ordered partial ones.
    with session_setting(conn, "preserve_insertion_order", "false"):
        return conn.sql(
            f"""INSERT INTO {rows_table(spec)} ({column}, {columns}, source_id, source_row,
                    parse_error, raw_text)
                SELECT * FROM (
                    SELECT {_placed_grain(spec, placement)} AS {column}, {columns},
                        {source_id} AS source_id, {source_row} AS source_row, parse_error, raw_text
                    FROM staged)
                WHERE {column} BETWEEN ? AND ?""",
            params=[first, last],
        ).fetchall()[0][0]


def _load_staged(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    name: str,
    sha: str,
    source_row: str,
    placement: Placement,
    window: tuple[GrainValue, GrainValue],
    ingested_at: dt.datetime,
) -> int:
    """Register the source and insert its staged rows of the window's grains; returns how many."""
    if placement.first is None or placement.first > window[1] or placement.last < window[0]:
        return 0
    source_id = _register_source(conn, spec, name, sha, ingested_at)
    inserted = _insert_staged(conn, spec, source_id, source_row, placement, *window)
    if not inserted:
        conn.sql(f"DELETE FROM {sources_table(spec)} WHERE source_id = ?", params=[source_id])
    return inserted


def _overlaps(days: tuple[str, ...] | tuple[dt.date, dt.date], first: dt.date, last: dt.date) -> bool:
    """Whether days (text or dates, None for unknown) reach into ``first..last``."""
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


def _stage_landed(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, path: Path
) -> tuple[set[str], str, Placement]:
    """Stage one landed file: its columns, the SQL of its row numbers and its placement."""
    schema = inspect_file(conn, path)
    missing = [c for c in spec.required_columns if c not in schema.columns]
    if missing:
        raise LandingFileError(f"{path}: missing required column(s) {', '.join(missing)}")
    source_row = stage_file(conn, path, schema, spec)
    name_days = days_in_name(path)
    placement = place_staged(conn, spec, name_days[0] if name_days else None)
    if placement.unplaced:
        raise LandingFileError(
            f"{path}: no row has a timestamp inside the partitions and the file name holds"
            " no date (YYYY-MM-DD), so its rows cannot be placed in a partition"
        )
    return set(schema.columns), source_row, placement


def _load_landing_files(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    landing_dir: Path,
    first: GrainValue,
    last: GrainValue,
    load: RawLoad,
    ingested_at: dt.datetime,
) -> None:
    index = _index(conn, spec)
    # The index and file names know days: a file is skipped when none of its days is loaded.
    first_day, last_day = grain(spec).days(first, last)
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
            columns, source_row, placement = _stage_landed(conn, spec, path)
        except LandingFileError as exc:
            _record(conn, spec, path, sha, (None, None), 0, str(exc))
            if not name_days or _overlaps(name_days, first_day, last_day):
                load.rejected.append(RejectedFile(str(path), sha, str(exc), name_days))
            continue
        days = grain(spec).days(placement.first, placement.last) if placement.first else (None, None)
        _record(conn, spec, path, sha, days, placement.rows, None)
        load.columns_seen[str(path)] = columns
        if _load_staged(conn, spec, str(path), sha, source_row, placement, (first, last), ingested_at):
            load.files[str(path)] = sha


def _load_pulled(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    name: str,
    table: pa.Table,
    first: GrainValue,
    last: GrainValue,
    load: RawLoad,
    ingested_at: dt.datetime,
) -> None:
    """Rows pulled from a database or an API: staged from Arrow, placed and inserted like a file."""
    from ml_platform.ingestion.pull import content_sha256

    present = set(table.column_names) - {"source_row"}
    conn.register("pulled_rows", table)
    try:
        with typing_in_sql(conn):
            conn.sql(
                f"""CREATE OR REPLACE TEMP TABLE staged AS
                    SELECT {typed_select(spec, present)}, NULL::VARCHAR AS parse_error, source_row
                    FROM pulled_rows"""
            )
    finally:
        conn.unregister("pulled_rows")
    placement = place_staged(conn, spec, grain(spec).text(first))
    sha = content_sha256(table)
    load.columns_seen[name] = present
    if _load_staged(conn, spec, name, sha, "source_row", placement, (first, last), ingested_at):
        load.files[name] = sha


def load_raw_partitions(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    landing_dir: Path,
    first: GrainValue,
    last: GrainValue,
) -> RawLoad:
    """Replace the raw rows of grains ``first..last`` (days, or hours) with what the sources hold now."""
    from ml_platform.ingestion.pull import pull

    ensure_raw_tables(conn, spec)
    unit = grain(spec)
    load = RawLoad()
    ingested_at = dt.datetime.now(dt.UTC)
    # Pull from remote sources before the transaction, so it holds no lock while waiting on them.
    window = unit.span(first, last)
    pulled = [pull(source, spec, *window) for source in spec.sources if not isinstance(source, LandingFiles)]
    conn.begin()
    try:
        conn.sql(f"DELETE FROM {rows_table(spec)} WHERE {unit.column} BETWEEN ? AND ?", params=[first, last])
        for source in spec.sources:
            if isinstance(source, LandingFiles):
                _load_landing_files(conn, spec, landing_dir, first, last, load, ingested_at)
        for name, table in pulled:
            _load_pulled(conn, spec, name, table, first, last, load, ingested_at)
        # Sources whose rows were all replaced are no longer anyone's provenance.
        conn.sql(
            f"""DELETE FROM {sources_table(spec)}
                WHERE source_id NOT IN (SELECT DISTINCT source_id FROM {rows_table(spec)})"""
        )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.sql("DROP TABLE IF EXISTS temp.staged")
    for value, count in conn.sql(
        f"""SELECT CAST({unit.column} AS VARCHAR), count(*) FROM {rows_table(spec)}
            WHERE {unit.column} BETWEEN ? AND ? GROUP BY 1 ORDER BY 1""",
        params=[first, last],
    ).fetchall():
        load.rows_by_grain[value] = count
    return load


def file_grains(path: Path, spec: UseCaseSpec) -> list[str]:
    """The grains (days, or hours) a landed file has rows for, as text, read in a private
    in-memory DuckDB; a file that cannot be read gives the days in its name."""
    from ml_platform.resources.platform import configure_connection

    with duckdb.connect() as conn:
        configure_connection(conn, "512MB")
        try:
            schema = inspect_file(conn, path)
            if spec.timestamp not in schema.columns:
                return list(days_in_name(path))
            stage_file(conn, path, schema, spec)
            name_days = days_in_name(path)
            placement = place_staged(conn, spec, name_days[0] if name_days else None)
            found = conn.sql(
                f"""SELECT DISTINCT CAST({_placed_grain(spec, placement)} AS VARCHAR) AS placed
                    FROM staged WHERE placed IS NOT NULL ORDER BY 1"""
            ).fetchall()
        except LandingFileError:
            return list(days_in_name(path))
    return [row[0] for row in found] or list(days_in_name(path))
