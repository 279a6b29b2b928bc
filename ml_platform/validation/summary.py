"""Validating raw rows once, into a narrow table of rejects that the checks, the samples and
the quarantine all read.

Row rules are one CASE expression over each typed row. Duplicate keys are found among the rows
that pass: an aggregate over one hash per row finds the keys that repeat (few), and only rows
with those keys are ranked (the first landed, by file then row number, is kept). Nothing sorts
the whole partition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ml_platform.ingestion.raw import raw_table, rows_table
from ml_platform.spec import UseCaseSpec
from ml_platform.validation.rules import CHECK_NAMES, check_of_reason, key_columns, reason_sql

SAMPLE_ROWS = 5
ROW_ID = ("partition_date", "source_id", "source_row")


@dataclass
class ValidationSummary:
    rows: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def bad_share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    def by_check(self) -> dict[str, dict[str, int]]:
        grouped: dict[str, dict[str, int]] = {name: {} for name in CHECK_NAMES}
        for reason, count in self.rejected_by_reason.items():
            grouped[check_of_reason(reason)][reason] = count
        return grouped


def rejects_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_rejects"


def partition_filter(first_day: dt.date, last_day: dt.date) -> str:
    return f"partition_date BETWEEN DATE '{first_day.isoformat()}' AND DATE '{last_day.isoformat()}'"


def record_rejects(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first_day: dt.date, last_day: dt.date
) -> None:
    """Replace the rejects of days ``first_day..last_day``: (row id, reason) of every row that fails."""
    scope = partition_filter(first_day, last_day)
    keys = ", ".join(key_columns(spec))
    row_id = ", ".join(ROW_ID)
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {rejects_table(spec)} (
            partition_date DATE, source_id INTEGER, source_row BIGINT, reject_reason VARCHAR)"""
    )
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE row_rejects AS
            SELECT * FROM (SELECT {row_id}, {reason_sql(spec)} AS reject_reason
                FROM {rows_table(spec)} WHERE {scope})
            WHERE reject_reason IS NOT NULL"""
    )
    # Keys that repeat, found by their hash over every row (one narrow aggregate); only rows with
    # those hashes are compared on the key itself and ranked: the first landed (by file, then
    # row number) is kept, the others are duplicates.
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE duplicate_rejects AS
            WITH repeated AS (
                SELECT hash({keys}) AS key_hash FROM {rows_table(spec)} WHERE {scope}
                GROUP BY 1 HAVING count(*) > 1
            ), candidates AS (
                SELECT * FROM {raw_table(spec)} ANTI JOIN row_rejects USING ({row_id})
                WHERE {scope} AND hash({keys}) IN (SELECT key_hash FROM repeated)
            )
            SELECT {row_id}, 'duplicate_key' AS reject_reason FROM candidates
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY source_file, source_row) > 1"""
    )
    conn.begin()
    conn.sql(f"DELETE FROM {rejects_table(spec)} WHERE {scope}")
    conn.sql(
        f"""INSERT INTO {rejects_table(spec)}
            SELECT * FROM row_rejects UNION ALL SELECT * FROM duplicate_rejects"""
    )
    conn.commit()
    conn.sql("DROP TABLE row_rejects")
    conn.sql("DROP TABLE duplicate_rejects")


def rejected_rows_sql(spec: UseCaseSpec, scope: str) -> str:
    """Raw rows of ``scope`` (with provenance) joined with their reject reason (only rejected rows)."""
    return f"""SELECT r.*, j.reject_reason FROM {raw_table(spec)} r
        JOIN (SELECT * FROM {rejects_table(spec)} WHERE {scope}) j USING ({", ".join(ROW_ID)})
        WHERE r.{scope}"""


def summarize(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first_day: dt.date, last_day: dt.date
) -> ValidationSummary:
    """Counts per reason and a few sample rows per check, from the recorded rejects."""
    scope = partition_filter(first_day, last_day)
    rows = conn.sql(f"SELECT count(*) FROM {rows_table(spec)} WHERE {scope}").fetchall()[0][0]
    summary = ValidationSummary(rows=rows)
    for reason, count in conn.sql(
        f"SELECT reject_reason, count(*) FROM {rejects_table(spec)} WHERE {scope} GROUP BY 1"
    ).fetchall():
        summary.rejected_by_reason[reason] = count
    sample = conn.sql(
        # What a person reading the check needs first: the rule, where the row came from, and
        # the row as it arrived; then its typed values.
        f"""SELECT j.reject_reason, r.source_file, r.source_row, coalesce(r.raw_text, '') AS raw_text,
                {", ".join(f'r."{c}"' for c in spec.column_names)}, r.partition_date
            FROM {raw_table(spec)} r JOIN (
                SELECT * FROM {rejects_table(spec)} WHERE {scope}
                QUALIFY row_number() OVER (PARTITION BY reject_reason ORDER BY source_id, source_row)
                    <= {SAMPLE_ROWS}
            ) j USING ({", ".join(ROW_ID)})
            WHERE r.{scope}
            ORDER BY j.reject_reason, r.source_file, r.source_row"""
    )
    names = sample.columns
    for values in sample.fetchall():
        row = dict(zip(names, values, strict=True))
        summary.samples.setdefault(check_of_reason(row["reject_reason"]), []).append(row)
    return summary


def write_quarantine(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first_day: dt.date, last_day: dt.date
) -> str:
    """Replace the quarantine of days ``first_day..last_day`` with their rejected raw rows."""
    table = f"{spec.name}.{spec.quarantine_name}"
    scope = partition_filter(first_day, last_day)
    conn.sql(f"CREATE TABLE IF NOT EXISTS {table} AS {rejected_rows_sql(spec, scope)} AND FALSE")
    conn.begin()
    conn.sql(f"DELETE FROM {table} WHERE {scope}")
    conn.sql(f"INSERT INTO {table} {rejected_rows_sql(spec, scope)}")
    conn.commit()
    return table
