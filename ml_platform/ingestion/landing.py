"""The landing zone: files an outside system drops, read (never modified) through DuckDB.

Every file is read with all columns as text, so typing is a validation rule and not a reason
to lose a row. Lines that do not parse (wrong column count, bad encoding, invalid JSON) are kept
as rows carrying ``parse_error`` and the raw line, so they reach the quarantine instead of
vanishing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

KINDS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


class LandingFileError(ValueError):
    """A landed file that cannot be read as a whole; the message names the file and the cause."""


@dataclass(frozen=True)
class FileSchema:
    kind: str  # "csv" | "parquet" | "jsonl"
    columns: tuple[str, ...]


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((kind for suffix, kind in KINDS.items() if name.endswith(suffix)), None)


def list_landing_files(directory: Path) -> list[Path]:
    """Data files directly in ``directory`` (labels live in a subfolder), in name order."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and file_kind(p) is not None
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def days_in_name(path: Path) -> tuple[str, ...]:
    return tuple(_DATE_IN_NAME.findall(path.name))


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _lines_source(path: Path) -> str:
    """Each line of a text file as one column: JSON lines are then parsed row by row."""
    return (
        f"read_csv({_literal(path)}, columns={{'line': 'VARCHAR'}}, header=false, auto_detect=false,"
        " delim=chr(30), quote='', escape='', new_line='\\n', store_rejects=true,"
        " rejects_table='landing_rejects', rejects_scan='landing_reject_scans')"
    )


def _csv_source(path: Path) -> str:
    return (
        f"read_csv({_literal(path)}, all_varchar=true, header=true, store_rejects=true,"
        " rejects_table='landing_rejects', rejects_scan='landing_reject_scans')"
    )


def inspect_file(conn: duckdb.DuckDBPyConnection, path: Path) -> FileSchema:
    """The file's kind and column names, from its header (CSV), footer (Parquet) or lines (JSON)."""
    kind = file_kind(path)
    if kind is None:
        raise LandingFileError(
            f"{path}: unsupported file type (expected .csv, .parquet or .jsonl, optionally .gz)"
        )
    if path.stat().st_size == 0:
        raise LandingFileError(f"{path}: the file is empty (not even a header)")
    try:
        if kind == "csv":
            described = conn.sql(f"DESCRIBE SELECT * FROM {_csv_source(path)}").fetchall()
            columns = tuple(row[0] for row in described)
        elif kind == "parquet":
            described = conn.sql(f"DESCRIBE SELECT * FROM read_parquet({_literal(path)})").fetchall()
            columns = tuple(row[0] for row in described)
        else:
            keys = conn.sql(
                f"""SELECT DISTINCT unnest(json_keys(line)) FROM (
                        SELECT line FROM {_lines_source(path)}
                        WHERE CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' END
                        LIMIT 10000)"""
            ).fetchall()
            columns = tuple(sorted(k[0] for k in keys))
            if not columns:
                raise LandingFileError(f"{path}: no line is a JSON object")
    except duckdb.Error as exc:
        raise LandingFileError(f"{path}: cannot be parsed ({_first_line(exc)})") from None
    return FileSchema(kind, columns)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]


def stage_file(
    conn: duckdb.DuckDBPyConnection, path: Path, schema: FileSchema, columns: list[str], table: str
) -> None:
    """Create temp ``table``: ``columns`` as text, ``source_row``, ``parse_error``, ``raw_line``.

    ``source_row`` numbers data rows from 1 in file order (the header is not a row). Lines the
    reader rejects keep their place in that numbering.
    """
    present = set(schema.columns)
    try:
        if schema.kind == "csv":
            _stage_csv(conn, path, present, columns, table)
        elif schema.kind == "parquet":
            selected = ", ".join(
                f'CAST("{c}" AS VARCHAR) AS "{c}"' if c in present else f'NULL::VARCHAR AS "{c}"'
                for c in columns
            )
            conn.sql(
                f"""CREATE OR REPLACE TEMP TABLE {table} AS
                    SELECT {selected}, file_row_number + 1 AS source_row,
                        NULL::VARCHAR AS parse_error, NULL::VARCHAR AS raw_line
                    FROM read_parquet({_literal(path)}, file_row_number=true)"""
            )
        else:
            _stage_jsonl(conn, path, columns, table)
    except duckdb.Error as exc:
        raise LandingFileError(f"{path}: cannot be read ({_first_line(exc)})") from None


def _clear_rejects(conn: duckdb.DuckDBPyConnection) -> None:
    for name in ("landing_rejects", "landing_reject_scans"):
        conn.sql(f"DROP TABLE IF EXISTS temp.{name}")


def _merge_rejects(
    conn: duckdb.DuckDBPyConnection, table: str, columns: list[str], header_lines: int
) -> None:
    """Put lines the reader rejected back as rows, in their place in the row numbering."""
    exists = conn.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = 'landing_rejects'"
    ).fetchall()[0][0]
    if not exists or not conn.sql("SELECT count(*) FROM landing_rejects").fetchall()[0][0]:
        return
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE rejected_rows AS
            SELECT DISTINCT ON (line) line - {header_lines} AS source_row, error_type,
                left(csv_line, 500) AS csv_line
            FROM landing_rejects ORDER BY line"""
    )
    # The scan numbered accepted rows 1..n; an accepted row moves down by the number of
    # rejected rows that come before it.
    conn.sql(
        f"""UPDATE {table} SET source_row = source_row + (
                SELECT count(*) FROM (
                    SELECT source_row - row_number() OVER (ORDER BY source_row) AS accepted_before
                    FROM rejected_rows) r
                WHERE r.accepted_before < {table}.source_row)"""
    )
    nulls = ", ".join("NULL" for _ in columns)
    conn.sql(f"INSERT INTO {table} SELECT {nulls}, source_row, error_type, csv_line FROM rejected_rows")


def _stage_csv(conn, path: Path, present: set[str], columns: list[str], table: str) -> None:
    selected = ", ".join(f'"{c}"' if c in present else f'NULL::VARCHAR AS "{c}"' for c in columns)
    _clear_rejects(conn)
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT {selected}, row_number() OVER () AS source_row,
                NULL::VARCHAR AS parse_error, NULL::VARCHAR AS raw_line
            FROM {_csv_source(path)}"""
    )
    _merge_rejects(conn, table, columns, header_lines=1)


def _json_field(column: str) -> str:
    path = "'$.\"" + column + "\"'"
    return (
        f"CASE WHEN valid AND json_type(line, {path}) <> 'NULL'"
        f' THEN json_extract_string(line, {path}) END AS "{column}"'
    )


def _stage_jsonl(conn, path: Path, columns: list[str], table: str) -> None:
    fields = ", ".join(_json_field(c) for c in columns)
    _clear_rejects(conn)
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
            WITH numbered AS (
                SELECT line, row_number() OVER () AS source_row FROM {_lines_source(path)}
            ), checked AS (
                SELECT *, CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END
                    AS valid
                FROM numbered
                WHERE trim(line) <> ''
            )
            SELECT {fields}, source_row,
                CASE WHEN valid THEN NULL ELSE 'INVALID JSON' END AS parse_error,
                CASE WHEN valid THEN NULL ELSE left(line, 500) END AS raw_line
            FROM checked"""
    )
    _merge_rejects(conn, table, columns, header_lines=0)
