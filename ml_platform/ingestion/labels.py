"""Delayed labels: anomaly windows landed as files, loaded into daily partitions of the warehouse.

A labels file ``<name>_<first day>_<last day>.csv`` (columns: the entity, ``start``, ``end``) holds
every anomaly window of those days; a day it covers without a window had none. Partition ``D`` of
``raw_labels`` holds the windows overlapping ``D`` from the newest file covering ``D``, and
``label_days`` records that ``D``'s labels have arrived: monitoring judges predictions only on
covered days.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import polars as pl

from ml_platform.ingestion.landing import file_sha256
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import replace_days

_SPAN = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})\.csv$")


class LabelFileError(ValueError):
    """A labels file that cannot be loaded; the message names the file, line and field."""


def label_file_span(path: Path) -> tuple[dt.date, dt.date] | None:
    match = _SPAN.search(path.name)
    if not match:
        return None
    return dt.date.fromisoformat(match.group(1)), dt.date.fromisoformat(match.group(2))


def label_files(labels_dir: Path) -> list[tuple[Path, dt.date, dt.date]]:
    """Labels files with the days they cover, oldest modification first (newer files win)."""
    found = []
    for path in labels_dir.glob("*.csv") if labels_dir.is_dir() else []:
        span = label_file_span(path)
        if span is not None:
            found.append((path, *span))
    return sorted(found, key=lambda f: (f[0].stat().st_mtime_ns, f[0].name))


def covering_file(files: list[tuple[Path, dt.date, dt.date]], day: dt.date) -> Path | None:
    """The newest of ``files`` (as ``label_files`` lists them) that covers ``day``."""
    covering = [path for path, first, last in files if first <= day <= last]
    return covering[-1] if covering else None


def read_label_file(path: Path, spec: UseCaseSpec) -> pl.DataFrame:
    """The windows of one file: entity, start, end (UTC); a bad row fails naming its line."""
    frame = pl.read_csv(path, infer_schema=False)
    missing = {spec.entity, "start", "end"} - set(frame.columns)
    if missing:
        raise LabelFileError(
            f"{path}: missing column(s) {sorted(missing)}; expected {spec.entity}, start, end"
        )
    parsed = frame.select(
        pl.col(spec.entity),
        pl.col("start").str.to_datetime(time_zone="UTC", strict=False).alias("start"),
        pl.col("end").str.to_datetime(time_zone="UTC", strict=False).alias("end"),
        pl.col("start").alias("_start_text"),
        pl.col("end").alias("_end_text"),
    ).with_row_index("_line", offset=2)  # line 1 is the header
    for field, problem in (
        (spec.entity, pl.col(spec.entity).is_null()),
        ("start", pl.col("start").is_null()),
        ("end", pl.col("end").is_null()),
        ("end", pl.col("end") < pl.col("start")),
    ):
        bad = parsed.filter(problem)
        if not bad.is_empty():
            row = bad.row(0, named=True)
            raise LabelFileError(
                f"{path}, line {row['_line']}: field '{field}' is missing, unparseable or before start "
                f"(start={row['_start_text']!r}, end={row['_end_text']!r}); {len(bad)} such row(s)"
            )
    return parsed.select(spec.entity, "start", "end")


def load_label_days(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, labels_dir: Path, first: dt.date, last: dt.date
) -> dict[str, object]:
    """Replace partitions ``first``..``last`` of ``raw_labels`` and ``label_days``.

    Fails before writing anything when a day has no labels file yet or a file is bad.
    """
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    files_found = label_files(labels_dir)
    sources = {day: covering_file(files_found, day) for day in days}
    uncovered = [d.isoformat() for d, path in sources.items() if path is None]
    if uncovered:
        raise LabelFileError(
            f"no labels file in {labels_dir} covers {', '.join(uncovered)} yet "
            "(labels land as <name>_<first day>_<last day>.csv)"
        )
    files = {path: (read_label_file(path, spec), file_sha256(path)) for path in set(sources.values())}
    ingested_at = dt.datetime.now(dt.UTC)
    rows, coverage = [], []
    for day, path in sources.items():
        windows, sha = files[path]
        start, end = (
            dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) for d in (day, day + dt.timedelta(days=1))
        )
        overlapping = windows.filter((pl.col("start") < end) & (pl.col("end") >= start))
        rows.append(
            overlapping.with_columns(
                pl.lit(day).alias("label_day"),
                pl.lit(str(path)).alias("source_file"),
                pl.lit(sha).alias("file_sha256"),
            )
        )
        coverage.append(
            {"label_day": day, "source_file": str(path), "file_sha256": sha, "windows": len(overlapping)}
        )
    labels = pl.concat(rows).with_columns(pl.lit(ingested_at).alias("ingested_at"))
    covered = pl.DataFrame(coverage).with_columns(pl.lit(ingested_at).alias("ingested_at"))
    conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
    replace_days(
        conn, "label_day", first, last, {labels_table(spec): labels, label_days_table(spec): covered}
    )
    return {
        "dagster/row_count": len(labels),
        "windows": labels.select(spec.entity, "start", "end").unique().height,
        "days": len(days),
        "source_files": {str(path): sha for path, (_, sha) in sorted(files.items())},
    }


def labels_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_labels"


def label_days_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.label_days"


def _exists(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, table: str) -> bool:
    query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
    return conn.sql(query, params=[spec.name, table]).fetchall()[0][0] > 0


def read_label_windows(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> pl.DataFrame:
    """Every anomaly window that has arrived (entity, start, end); empty before any label lands."""
    schema = {spec.entity: pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}
    if not _exists(conn, spec, "raw_labels"):
        return pl.DataFrame(schema=schema)
    query = f'SELECT DISTINCT {spec.entity}, start, "end" FROM {labels_table(spec)} ORDER BY ALL'
    return conn.sql(query).pl().cast(schema)


def labelled_days(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> list[dt.date]:
    """Days whose labels have arrived."""
    if not _exists(conn, spec, "label_days"):
        return []
    return [
        row[0] for row in conn.sql(f"SELECT label_day FROM {label_days_table(spec)} ORDER BY 1").fetchall()
    ]
