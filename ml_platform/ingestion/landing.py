"""The landing zone: files an outside system drops, read (never modified) through DuckDB.

Every file is read with all columns as text and typed as it is staged, so a value that does not
parse is a validation failure and not a reason to lose a row (the row keeps its text). Lines that
do not split into fields (wrong column count, bad encoding, invalid JSON) are kept as rows
carrying ``parse_error`` and the raw line, so they reach the quarantine instead of vanishing.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ml_platform.errors import first_line
from ml_platform.spec import UseCaseSpec
from ml_platform.validation.rules import typed_select

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


def _csv_header(path: Path) -> list[str] | None:
    """The header's names as written (DuckDB renames a repeated one), or None if unreadable here."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader([handle.readline(1 << 20)]), [])
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error):
        return None


def _clashing(names: list[str]) -> list[str]:
    """Names that repeat when case is ignored, as SQL (and so the warehouse) ignores it."""
    folded = Counter(name.lower() for name in names)
    return [name for name in names if folded[name.lower()] > 1]


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
            if clashing := _clashing(_csv_header(path) or []):
                raise LandingFileError(
                    f"{path}: header columns {', '.join(clashing)} are the same name (column names "
                    "ignore case); rename or drop one of them"
                )
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
        raise LandingFileError(f"{path}: cannot be parsed ({first_line(exc)})") from None
    return FileSchema(kind, columns)


@contextmanager
def session_setting(conn: duckdb.DuckDBPyConnection, name: str, value: str) -> Iterator[None]:
    """``SET name = value`` on the connection for the block, then the setting as it was."""
    before = conn.sql(f"SELECT current_setting('{name}')").fetchall()[0][0]
    conn.sql(f"SET {name} = '{value}'")
    try:
        yield
    finally:
        conn.sql(f"SET {name} = '{before}'")


def typing_in_sql(conn: duckdb.DuckDBPyConnection) -> AbstractContextManager[None]:
    """Keep ``TRY_CAST`` in the query instead of letting DuckDB push it into the file reader.

    DuckDB 2.0 pushes a cast of a column into its reader as the column's type, and the reader
    then fails the whole file on the first value that does not parse instead of giving NULL
    (duckdb/duckdb#23818): one bad value would reject a file whose other rows are good.
    """
    disabled = conn.sql("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    names = [name.strip() for name in disabled.split(",") if name.strip()]
    return session_setting(conn, "disabled_optimizers", ",".join([*names, "type_pushdown"]))


def stage_file(conn: duckdb.DuckDBPyConnection, path: Path, schema: FileSchema, spec: UseCaseSpec) -> str:
    """Create temp table ``staged``: the file's rows typed (``typed_select``) plus ``parse_error``.

    Returns the SQL giving each staged row's ``source_row``, numbering data rows from 1 in file
    order (the header is not a row); lines the reader rejects keep their place in that numbering.
    A clean CSV is numbered by the staged table's own row order (DuckDB keeps insertion order),
    which leaves its parallel reader parallel.
    """
    present = set(schema.columns)
    try:
        with typing_in_sql(conn):
            if schema.kind == "csv":
                return _stage_csv(conn, path, spec, present)
            if schema.kind == "parquet":
                conn.sql(
                    f"""CREATE OR REPLACE TEMP TABLE staged AS
                        SELECT {typed_select(spec, present)}, NULL::VARCHAR AS parse_error,
                            file_row_number + 1 AS source_row
                        FROM read_parquet({_literal(path)}, file_row_number=true)"""
                )
                return "source_row"
            _stage_jsonl(conn, path, spec)
            return "source_row"
    except duckdb.Error as exc:
        raise LandingFileError(f"{path}: cannot be read ({first_line(exc)})") from None


def _clear_rejects(conn: duckdb.DuckDBPyConnection) -> None:
    for name in ("landing_rejects", "landing_reject_scans"):
        conn.sql(f"DROP TABLE IF EXISTS temp.{name}")


def _rejected_lines(conn: duckdb.DuckDBPyConnection, header_lines: int) -> int:
    """Temp table ``rejected_rows`` (source_row, error_type, csv_line) of the lines the reader
    rejected; returns how many there are."""
    exists = conn.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = 'landing_rejects'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE rejected_rows AS
            SELECT DISTINCT ON (line) line - {header_lines} AS source_row, error_type,
                left(csv_line, 500) AS csv_line
            FROM landing_rejects ORDER BY line"""
    )
    return conn.sql("SELECT count(*) FROM rejected_rows").fetchall()[0][0]


def _insert_rejected_lines(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """The rejected lines as rows of ``table``: no values, the reader's error and the line."""
    conn.sql(
        f"""INSERT INTO {table} (parse_error, raw_text, source_row)
            SELECT error_type, csv_line, source_row FROM rejected_rows"""
    )


def _stage_csv(conn: duckdb.DuckDBPyConnection, path: Path, spec: UseCaseSpec, present: set[str]) -> str:
    _clear_rejects(conn)
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE staged AS
            SELECT {typed_select(spec, present)}, NULL::VARCHAR AS parse_error FROM {_csv_source(path)}"""
    )
    # Row ids are contiguous in insertion order; inside a transaction they start at an offset.
    first_rowid = conn.sql("SELECT coalesce(min(rowid), 0) FROM staged").fetchall()[0][0]
    accepted = f"rowid - {first_rowid} + 1"
    if not _rejected_lines(conn, header_lines=1):
        return accepted
    # The k-th accepted row moves down by the number of rejected lines before it: those whose
    # count of accepted rows before them is below k.
    conn.sql(
        """CREATE OR REPLACE TEMP TABLE reject_shifts AS
            SELECT source_row - n AS accepted_before, max(n) AS rejected
            FROM (SELECT source_row, row_number() OVER (ORDER BY source_row) AS n FROM rejected_rows)
            GROUP BY 1"""
    )
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE staged_numbered AS
            SELECT s.* EXCLUDE (accepted), s.accepted + coalesce(j.rejected, 0) AS source_row
            FROM (SELECT *, {accepted} AS accepted FROM staged) s
            ASOF LEFT JOIN reject_shifts j ON s.accepted > j.accepted_before"""
    )
    _insert_rejected_lines(conn, "staged_numbered")
    conn.sql("DROP TABLE staged")
    conn.sql("ALTER TABLE staged_numbered RENAME TO staged")
    return "source_row"


def _json_field(column: str) -> str:
    path = "'$.\"" + column + "\"'"
    return (
        f"CASE WHEN valid AND json_type(line, {path}) <> 'NULL'"
        f' THEN json_extract_string(line, {path}) END AS "{column}"'
    )


def _stage_jsonl(conn: duckdb.DuckDBPyConnection, path: Path, spec: UseCaseSpec) -> None:
    fields = ", ".join(_json_field(c) for c in spec.column_names)
    _clear_rejects(conn)
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE staged AS
            WITH numbered AS (
                SELECT line, row_number() OVER () AS source_row FROM {_lines_source(path)}
            ), checked AS (
                SELECT *, CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END
                    AS valid
                FROM numbered
                WHERE trim(line) <> ''
            ), fields AS (
                SELECT {fields}, source_row,
                    CASE WHEN valid THEN NULL ELSE 'INVALID JSON' END AS parse_error,
                    CASE WHEN valid THEN NULL ELSE left(line, 500) END AS raw_line
                FROM checked
            )
            SELECT {typed_select(spec, set(spec.column_names), line="raw_line")}, parse_error, source_row
            FROM fields"""
    )
    if _rejected_lines(conn, header_lines=0):
        _insert_rejected_lines(conn, "staged")
