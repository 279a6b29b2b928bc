"""Delayed labels, landed as files (or posted, which lands a file), loaded by day into partitions.

A labels file is ``<name>_<first day>_<last day>.csv``, in the columns of the spec's kind of labels:
- anomaly windows (the entity, ``start``, ``end``): the file holds every window of the days it
  covers, a day without a window had none. Partition ``D`` of ``raw_labels`` holds the windows
  overlapping ``D`` from the newest file covering ``D``;
- event labels (the entity, the timestamp, the label column): labels of events of those days; they
  add up across files, and the newest file's label of an event wins (a correction).
``label_days`` records which days' labels have arrived, and from which files.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.ingestion.landing import file_sha256
from ml_platform.spec import EventLabels, UseCaseSpec
from ml_platform.tables import replace_range, table_exists
from ml_platform.tasks import task_of
from ml_platform.timestamps import parse_timestamp

LabelFiles = list[tuple[Path, dt.date, dt.date]]  # (file, first day, last day), as label_files lists them
_SPAN = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})\.csv$")


LABEL = "label"  # the column an event's label is read into, for training and monitoring alike


class LabelFileError(ValueError):
    """A labels file that cannot be loaded; the message names the file, line and field."""


def label_file_span(path: Path) -> tuple[dt.date, dt.date] | None:
    match = _SPAN.search(path.name)
    if not match:
        return None
    return dt.date.fromisoformat(match.group(1)), dt.date.fromisoformat(match.group(2))


def label_files(labels_dir: Path) -> LabelFiles:
    """Labels files with the days they cover, oldest modification first (newer files win)."""
    found = []
    for path in labels_dir.glob("*.csv") if labels_dir.is_dir() else []:
        span = label_file_span(path)
        if span is not None:
            found.append((path, *span))
    return sorted(found, key=lambda f: (f[0].stat().st_mtime_ns, f[0].name))


def covering_file(files: LabelFiles, day: dt.date) -> Path | None:
    """The newest of ``files`` (as ``label_files`` lists them) that covers ``day``."""
    covering = [path for path, first, last in files if first <= day <= last]
    return covering[-1] if covering else None


def _utc(text: str | None) -> dt.datetime | None:
    """An ISO-8601 time in UTC (without an offset it is UTC), or None when it is not one."""
    try:
        return parse_timestamp(text.strip() if text is not None else None)
    except ValueError:
        return None


def _parse_times(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """Each text column of ``columns`` parsed to UTC value by value (a file may mix offsets and
    naive times; an unparseable value becomes null), its text kept as ``_<name>_text``."""
    return frame.with_columns(
        *(pl.Series(c, [_utc(v) for v in frame[c]], dtype=pl.Datetime("us", "UTC")) for c in columns),
        *(pl.col(c).alias(f"_{c}_text") for c in columns),
    )


def _first_bad(path: Path, parsed: pl.DataFrame, problems: list[tuple[str, pl.Expr]], shown: list[str]):
    for field, problem in problems:
        bad = parsed.filter(problem)
        if not bad.is_empty():
            row = bad.row(0, named=True)
            values = ", ".join(f"{c}={row[f'_{c}_text']!r}" for c in shown)
            raise LabelFileError(
                f"{path}, line {row['_line']}: field '{field}' is missing, unparseable or out of place "
                f"({values}); {len(bad)} such row(s)"
            )


def read_label_file(path: Path, spec: UseCaseSpec) -> pl.DataFrame:
    """The labels of one file, times in UTC: windows (entity, start, end) or event labels (entity,
    timestamp, label as the task reads it); a bad row fails naming its line and field."""
    frame = pl.read_csv(path, infer_schema=False)
    expected = spec.label_columns
    missing = set(expected) - set(frame.columns)
    if missing:
        raise LabelFileError(f"{path}: missing column(s) {sorted(missing)}; expected {', '.join(expected)}")
    entity = spec.entity
    frame = frame.select(expected).with_row_index("_line", offset=2)  # line 1 is the header
    if isinstance(spec.labels, EventLabels):
        timestamp, column = expected[1], expected[2]
        parsed = _parse_times(frame, (timestamp,)).with_columns(
            pl.col(column).alias(f"_{column}_text"),
            task_of(spec).parse_labels(pl.col(column)),
        )
        _first_bad(
            path,
            parsed,
            [
                (entity, pl.col(entity).is_null()),
                (timestamp, pl.col(timestamp).is_null()),
                (column, pl.col(column).is_null()),
            ],
            [timestamp, column],
        )
        return parsed.select(entity, timestamp, column)
    parsed = _parse_times(frame, ("start", "end"))
    _first_bad(
        path,
        parsed,
        [
            (entity, pl.col(entity).is_null()),
            ("start", pl.col("start").is_null()),
            ("end", pl.col("end").is_null()),
            ("end", pl.col("end") < pl.col("start")),
        ],
        ["start", "end"],
    )
    return parsed.select(entity, "start", "end")


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


@dataclass(frozen=True)
class DayLabels:
    """What ``load_label_days`` writes for some days: the labels, which file(s) each day's came
    from, and every file read (path -> sha256)."""

    rows: pl.DataFrame
    coverage: list[dict[str, object]]
    sources: dict[str, str]


def _window_rows(
    spec: UseCaseSpec, days: list[dt.date], files_found: LabelFiles, labels_dir: Path
) -> DayLabels:
    """Per day, the windows overlapping it from the newest file covering it. Days no file covers
    yet are left unlabelled (a monthly partition is often covered in part); none covered fails."""
    found = {day: covering_file(files_found, day) for day in days}
    sources = {day: path for day, path in found.items() if path is not None}
    if not sources:
        span = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
        raise LabelFileError(
            f"no labels file in {labels_dir} covers {span} yet "
            "(labels land as <name>_<first day>_<last day>.csv)"
        )
    files = {path: (read_label_file(path, spec), file_sha256(path)) for path in set(sources.values())}
    rows, coverage = [], []
    for day, path in sources.items():
        windows, sha = files[path]
        start, end = _day_bounds(day)
        overlapping = windows.filter((pl.col("start") < end) & (pl.col("end") >= start))
        rows.append(
            overlapping.with_columns(
                pl.lit(day).alias("label_day"),
                pl.lit(str(path)).alias("source_file"),
                pl.lit(sha).alias("file_sha256"),
            )
        )
        coverage.append(
            {"label_day": day, "source_file": str(path), "file_sha256": sha, "labels": len(overlapping)}
        )
    return DayLabels(pl.concat(rows), coverage, {str(path): sha for path, (_, sha) in files.items()})


def _event_rows(spec: UseCaseSpec, days: list[dt.date], files_found: LabelFiles) -> DayLabels:
    """Per day, the labels of its events from every file covering it, the newest label per event.

    A label whose event lies outside the days its file's name covers fails: it would never be read."""
    timestamp = spec.timestamp
    frames, shas = [], {}
    for order, (path, first, last) in enumerate(files_found):
        if last < days[0] or first > days[-1]:
            continue
        labels = read_label_file(path, spec)
        day = pl.col(timestamp).dt.date()
        outside = labels.with_row_index("_line", offset=2).filter(~day.is_between(first, last))
        if not outside.is_empty():
            row = outside.row(0, named=True)
            raise LabelFileError(
                f"{path}, line {row['_line']}: field '{timestamp}' ({row[timestamp]}) is outside the days "
                f"the file name covers ({first}..{last}); {len(outside)} such row(s)"
            )
        shas[str(path)] = sha = file_sha256(path)
        frames.append(
            labels.filter(day.is_between(days[0], days[-1])).with_columns(
                day.alias("label_day"),
                pl.lit(str(path)).alias("source_file"),
                pl.lit(sha).alias("file_sha256"),
                pl.lit(order).alias("_order"),
            )
        )
    schema = {
        spec.entity: pl.String,
        timestamp: pl.Datetime("us", "UTC"),
        spec.labels.column: task_of(spec).label_dtype,
        "label_day": pl.Date,
        "source_file": pl.String,
        "file_sha256": pl.String,
        "_order": pl.Int32,
    }
    found = pl.concat([f.cast(schema) for f in frames]) if frames else pl.DataFrame(schema=schema)
    newest = found.sort("_order").unique([spec.entity, timestamp], keep="last", maintain_order=True)
    coverage = (
        newest.group_by("label_day", "source_file", "file_sha256")
        .agg(pl.len().cast(pl.Int64).alias("labels"))
        .sort("label_day", "source_file")
    )
    return DayLabels(newest.drop("_order").sort(spec.entity, timestamp), coverage.to_dicts(), shas)


def load_label_days(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, labels_dir: Path, first: dt.date, last: dt.date
) -> dict[str, object]:
    """Replace partitions ``first``..``last`` of ``raw_labels`` and ``label_days``.

    Fails before writing anything when a file is bad or, for anomaly windows, no day of them has a
    labels file yet (a day's windows are only known once a file covers it; a day without one is
    not in ``label_days``, so nothing of it is judged)."""
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    files_found = label_files(labels_dir)
    if isinstance(spec.labels, EventLabels):
        found = _event_rows(spec, days, files_found)
    else:
        found = _window_rows(spec, days, files_found, labels_dir)
    ingested_at = dt.datetime.now(dt.UTC)
    labels = found.rows.with_columns(pl.lit(ingested_at).alias("ingested_at"))
    covered_schema = {
        "label_day": pl.Date,
        "source_file": pl.String,
        "file_sha256": pl.String,
        "labels": pl.Int64,
    }
    covered = pl.DataFrame(found.coverage, schema=covered_schema).with_columns(
        pl.lit(ingested_at).alias("ingested_at")
    )
    conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
    replace_range(
        conn, "label_day", first, last, {labels_table(spec): labels, label_days_table(spec): covered}
    )
    return {
        "dagster/row_count": len(labels),
        "labels": labels.select(spec.label_columns).unique().height,
        "days": len(days),
        "days_with_labels": covered["label_day"].n_unique(),
        "source_files": dict(sorted(found.sources.items())),
    }


def labels_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_labels"


def label_days_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.label_days"


def read_labels(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> pl.DataFrame:
    """Every label that has arrived, empty before any landed: anomaly windows (entity, ``start``,
    ``end``), or event labels (entity, ``event_timestamp``, ``label`` as the task types it)."""
    if isinstance(spec.labels, EventLabels):
        schema = {
            spec.entity: pl.String,
            EVENT_TIMESTAMP: pl.Datetime("us", "UTC"),
            LABEL: task_of(spec).label_dtype,
        }
        query = (
            f'SELECT "{spec.entity}", "{spec.timestamp}" AS {EVENT_TIMESTAMP}, '
            f'"{spec.labels.column}" AS {LABEL} FROM {labels_table(spec)} ORDER BY ALL'
        )
    else:
        schema = {spec.entity: pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}
        query = f'SELECT DISTINCT "{spec.entity}", start, "end" FROM {labels_table(spec)} ORDER BY ALL'
    if not table_exists(conn, labels_table(spec)):
        return pl.DataFrame(schema=schema)
    return conn.sql(query).pl().cast(schema)


def labelled_days(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec) -> list[dt.date]:
    """Days whose labels have arrived (for event labels: days with at least one label)."""
    if not table_exists(conn, label_days_table(spec)):
        return []
    query = f"SELECT DISTINCT label_day FROM {label_days_table(spec)} ORDER BY 1"
    return [row[0] for row in conn.sql(query).fetchall()]
