"""Landing files -> the raw table: one row per input row, in its own daily partition, with provenance.

Re-loading a partition deletes exactly that partition's rows and inserts them again from the
files now in the landing zone, so loading the same file twice never duplicates a row and a
file whose content changed replaces its old version's rows.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from ml_platform.ingestion.landing import (
    LandingFileError,
    file_sha256,
    list_landing_files,
    read_landing_file,
)
from ml_platform.spec import UseCaseSpec
from ml_platform.validation.rules import parsed

PROVENANCE_COLUMNS = ("source_file", "source_row", "file_sha256", "ingested_at")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class RejectedFile:
    path: str
    sha256: str
    reason: str
    days: tuple[str, ...]


@dataclass
class RawLoad:
    rows_by_day: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of files that contributed
    rejected: list[RejectedFile] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return sum(self.rows_by_day.values())


def raw_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_readings"


def ensure_raw_table(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> None:
    columns = ", ".join(f'"{c}" VARCHAR' for c in spec.column_names)
    conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {raw_table(spec)} (
            partition_date DATE, {columns}, source_file VARCHAR, source_row BIGINT,
            file_sha256 VARCHAR, ingested_at TIMESTAMPTZ)"""
    )


def _days_in_name(path: Path) -> tuple[str, ...]:
    return tuple(_DATE_IN_NAME.findall(path.name))


def _partition_dates(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, frame: pl.DataFrame):
    """Each row's UTC day; rows whose timestamp does not parse go to the file's first valid day."""
    ts = parsed(spec.timestamp, "timestamp")
    conn.register("incoming_rows", frame.select(spec.timestamp).to_arrow())
    try:
        days = conn.sql(f"SELECT CAST(timezone('UTC', {ts}) AS DATE) AS d FROM incoming_rows").pl()["d"]
    finally:
        conn.unregister("incoming_rows")
    first_valid = days.drop_nulls().min()
    return days.fill_null(first_valid) if first_valid is not None else days


def load_raw_partitions(
    conn: duckdb.DuckDBPyConnection,
    spec: UseCaseSpec,
    landing_dir: Path,
    first_day: dt.date,
    last_day: dt.date,
) -> RawLoad:
    """Replace the raw rows of days ``first_day..last_day`` with what the landing zone holds."""
    ensure_raw_table(conn, spec)
    wanted = (first_day, last_day)
    load = RawLoad()
    batches: list[pl.DataFrame] = []
    ingested_at = dt.datetime.now(dt.UTC)
    for path in list_landing_files(landing_dir):
        sha = file_sha256(path)
        try:
            frame = read_landing_file(path)
        except LandingFileError as exc:
            days = _days_in_name(path)
            if any(first_day.isoformat() <= d <= last_day.isoformat() for d in days):
                load.rejected.append(RejectedFile(str(path), sha, str(exc), days))
            continue
        missing = [c for c in spec.required_columns if c not in frame.columns]
        if spec.timestamp in frame.columns and len(frame):
            row_days = _partition_dates(conn, spec, frame)
        else:
            row_days = None
        if missing:
            if row_days is not None and row_days.drop_nulls().len():
                days = tuple(sorted({d.isoformat() for d in row_days.drop_nulls()}))
            else:
                days = _days_in_name(path)
            if any(first_day.isoformat() <= d <= last_day.isoformat() for d in days):
                reason = f"{path}: missing required column(s) {', '.join(missing)}"
                load.rejected.append(RejectedFile(str(path), sha, reason, days))
            continue
        if row_days is None:
            continue
        frame = frame.with_columns(
            [pl.lit(None, pl.String).alias(c) for c in spec.column_names if c not in frame.columns]
        )
        batch = (
            frame.select(spec.column_names)
            .with_row_index("source_row", offset=1)
            .with_columns(
                partition_date=row_days,
                source_file=pl.lit(str(path)),
                file_sha256=pl.lit(sha),
                ingested_at=pl.lit(ingested_at),
            )
            .filter(pl.col("partition_date").is_between(*wanted))
        )
        if len(batch):
            load.files[str(path)] = sha
            batches.append(batch)

    columns = ", ".join(f'"{c}"' for c in ("partition_date", *spec.column_names, *PROVENANCE_COLUMNS))
    conn.begin()
    try:
        conn.sql(
            f"DELETE FROM {raw_table(spec)} WHERE partition_date BETWEEN ? AND ?",
            params=list(wanted),
        )
        if batches:
            incoming = pl.concat(batches).select("partition_date", *spec.column_names, *PROVENANCE_COLUMNS)
            conn.register("incoming_batch", incoming.to_arrow())
            conn.sql(f"INSERT INTO {raw_table(spec)} ({columns}) SELECT {columns} FROM incoming_batch")
            conn.unregister("incoming_batch")
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    for day, count in conn.sql(
        f"""SELECT CAST(partition_date AS VARCHAR), count(*) FROM {raw_table(spec)}
            WHERE partition_date BETWEEN ? AND ? GROUP BY 1 ORDER BY 1""",
        params=list(wanted),
    ).fetchall():
        load.rows_by_day[day] = count
    return load
