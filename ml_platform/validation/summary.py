"""Validating raw rows once, into a narrow table of rejects that the checks, the samples and
the quarantine all read.

Row rules are one CASE expression over each typed row. Duplicate keys are found among the rows
that pass: an aggregate over one hash per row finds the keys that repeat (few), and only rows
with those keys are ranked (the first landed, by file then row number, is kept). Nothing sorts
the whole partition.

The bad share is judged per source file and per entity of each grain (day, or hour for hourly
partitions) as well as per partition: a
file or an entity whose own share of rule-breaking rows is over the maximum is quarantined whole
(its other rows with the reason ``bad_file`` or ``bad_entity``), so that one bad file or one
broken sensor does not stop the others. The partition is then judged on the rows outside those:
it stops the run when they are over the maximum too, or when nothing is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from ml_platform.ingestion.raw import raw_table, rows_table, sources_table
from ml_platform.partitions import GrainValue, grain
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import replace_range
from ml_platform.validation.rules import CHECK_NAMES, check_of_reason, key_columns, reason_sql

SAMPLE_ROWS = 5


def row_id(spec: UseCaseSpec) -> str:
    """The columns naming one raw row: its grain, source and row number there."""
    return f"{grain(spec).column}, source_id, source_row"


@dataclass
class ValidationSummary:
    rows: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Per grain (day, or hour): rows, quarantined, in isolated files or entities, and judged (the
    # others).
    by_grain: list[dict[str, Any]] = field(default_factory=list)
    # The files and entities quarantined whole (see ``_isolate``).
    isolated: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def judged_rows(self) -> int:
        return sum(d["judged_rows"] for d in self.by_grain)

    @property
    def bad_share(self) -> float:
        """The rule-breaking share of the rows outside isolated files and entities; 1.0 when every
        row of the partition is in one (nothing good is left)."""
        if not self.rows:
            return 0.0
        if not self.judged_rows:
            return 1.0
        return sum(d["judged_bad_rows"] for d in self.by_grain) / self.judged_rows

    def by_check(self) -> dict[str, dict[str, int]]:
        grouped: dict[str, dict[str, int]] = {name: {} for name in CHECK_NAMES}
        for reason, count in self.rejected_by_reason.items():
            grouped[check_of_reason(reason)][reason] = count
        return grouped


def rejects_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.raw_rejects"


def isolated_table(spec: UseCaseSpec) -> str:
    """Per grain, the files and entities quarantined whole, with their counts and rules."""
    return f"{spec.name}.raw_isolated"


def partition_filter(spec: UseCaseSpec, first: GrainValue, last: GrainValue) -> str:
    """SQL: the rows of grains ``first..last``."""
    unit = grain(spec)
    return f"{unit.column} BETWEEN {unit.literal(first)} AND {unit.literal(last)}"


def record_rejects(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first: GrainValue, last: GrainValue
) -> None:
    """Replace the rejects of grains ``first..last``: (row id, reason) of every row that fails."""
    scope = partition_filter(spec, first, last)
    keys = ", ".join(key_columns(spec))
    unit = grain(spec)
    ids = row_id(spec)
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {rejects_table(spec)} (
            {unit.column} {unit.sql_type}, source_id INTEGER, source_row BIGINT, reject_reason VARCHAR)"""
    )
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE row_rejects AS
            SELECT * FROM (SELECT {ids}, {reason_sql(spec)} AS reject_reason
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
                SELECT * FROM {raw_table(spec)} ANTI JOIN row_rejects USING ({ids})
                WHERE {scope} AND hash({keys}) IN (SELECT key_hash FROM repeated)
            )
            SELECT {ids}, 'duplicate_key' AS reject_reason FROM candidates
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY source_file, source_row) > 1"""
    )
    _isolate(conn, spec, scope)
    rejects = """SELECT * FROM row_rejects UNION ALL SELECT * FROM duplicate_rejects
                 UNION ALL SELECT * FROM isolated_rejects"""
    replace_range(
        conn,
        unit.column,
        first,
        last,
        {rejects_table(spec): rejects, isolated_table(spec): "SELECT * FROM isolated_groups"},
    )
    for table in ("row_rejects", "duplicate_rejects", "isolated_rejects", "isolated_groups"):
        conn.sql(f"DROP TABLE {table}")


def _isolate(conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, scope: str) -> None:
    """The files and entities of each grain over the bad share (``isolated_groups``), and their
    rows that broke no rule, quarantined with them (``isolated_rejects``)."""
    ids = row_id(spec)
    unit = grain(spec)
    at = unit.column
    limit = spec.expectations.max_bad_share
    conn.sql(
        f"""CREATE TABLE IF NOT EXISTS {isolated_table(spec)} (
            {at} {unit.sql_type}, kind VARCHAR, source_id INTEGER, source VARCHAR, entity VARCHAR,
            rows BIGINT, bad_rows BIGINT, bad_share DOUBLE, rules VARCHAR)"""
    )
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE judged AS
            SELECT r.{at}, r.source_id, r.source_row, r."{spec.entity}" AS entity,
                j.reject_reason
            FROM {rows_table(spec)} r
            LEFT JOIN (SELECT * FROM row_rejects UNION ALL SELECT * FROM duplicate_rejects) j
                USING ({ids})
            WHERE r.{scope}"""
    )
    group = """count(*) AS rows, count(reject_reason) AS bad_rows,
        count(reject_reason) / count(*) AS bad_share,
        string_agg(DISTINCT reject_reason, ', ' ORDER BY reject_reason) AS rules"""
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE isolated_groups AS
            SELECT {at}, 'file' AS kind, source_id, s.source_file AS source,
                NULL::VARCHAR AS entity, g.* EXCLUDE ({at}, source_id)
            FROM (SELECT {at}, source_id, {group} FROM judged GROUP BY ALL
                  HAVING count(reject_reason) / count(*) > {limit}) g
            JOIN {sources_table(spec)} s USING (source_id)
            UNION ALL
            SELECT {at}, 'entity', NULL, NULL, entity, g.* EXCLUDE ({at}, entity)
            FROM (SELECT {at}, entity, {group} FROM judged
                  WHERE entity IS NOT NULL AND trim(entity) <> ''
                  GROUP BY ALL HAVING count(reject_reason) / count(*) > {limit}) g"""
    )
    conn.sql(
        f"""CREATE OR REPLACE TEMP TABLE isolated_rejects AS
            SELECT {ids}, CASE WHEN f.source_id IS NOT NULL THEN 'bad_file' ELSE 'bad_entity' END
            FROM judged
            LEFT JOIN (SELECT {at}, source_id FROM isolated_groups WHERE kind = 'file') f
                USING ({at}, source_id)
            LEFT JOIN (SELECT {at}, entity AS e FROM isolated_groups WHERE kind = 'entity') n
                ON judged.{at} = n.{at} AND judged.entity = n.e
            WHERE judged.reject_reason IS NULL AND (f.source_id IS NOT NULL OR n.e IS NOT NULL)"""
    )
    conn.sql("DROP TABLE judged")


def rejected_rows_sql(spec: UseCaseSpec, scope: str) -> str:
    """Raw rows of ``scope`` (with provenance) joined with their reject reason (only rejected rows)."""
    return f"""SELECT r.*, j.reject_reason FROM {raw_table(spec)} r
        JOIN (SELECT * FROM {rejects_table(spec)} WHERE {scope}) j USING ({row_id(spec)})
        WHERE r.{scope}"""


def summarize(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first: GrainValue, last: GrainValue
) -> ValidationSummary:
    """Counts per reason and a few sample rows per check, from the recorded rejects."""
    scope = partition_filter(spec, first, last)
    unit = grain(spec)
    at, name = unit.column, unit.name
    by_grain = conn.sql(
        f"""SELECT {at} AS {name}, count(*) AS rows, count(j.reject_reason) AS quarantined,
                count(*) FILTER (isolated) AS isolated_rows,
                count(*) FILTER (NOT isolated) AS judged_rows,
                count(j.reject_reason) FILTER (NOT isolated) AS judged_bad_rows
            FROM (SELECT r.{at}, j.reject_reason,
                    f.source_id IS NOT NULL OR n.entity IS NOT NULL AS isolated
                FROM {rows_table(spec)} r
                LEFT JOIN (SELECT * FROM {rejects_table(spec)} WHERE {scope}) j USING ({row_id(spec)})
                LEFT JOIN (SELECT {at}, source_id FROM {isolated_table(spec)}
                           WHERE kind = 'file' AND {scope}) f USING ({at}, source_id)
                LEFT JOIN (SELECT {at} AS isolated_at, entity FROM {isolated_table(spec)}
                           WHERE kind = 'entity' AND {scope}) n
                    ON r.{at} = n.isolated_at AND r."{spec.entity}" = n.entity
                WHERE r.{scope}) j
            GROUP BY 1 ORDER BY 1"""
    )
    grains = [dict(zip(by_grain.columns, values, strict=True)) for values in by_grain.fetchall()]
    isolated = conn.sql(
        f"""SELECT {at} AS {name}, kind, coalesce(source, entity) AS "file or entity", rows,
                bad_rows, round(bad_share, 4) AS bad_share, rules
            FROM {isolated_table(spec)} WHERE {scope} ORDER BY 1, 2, 3"""
    )
    summary = ValidationSummary(
        rows=sum(g["rows"] for g in grains),
        by_grain=[{**g, name: unit.text(g[name])} for g in grains],
        isolated=[{**dict(zip(isolated.columns, values, strict=True))} for values in isolated.fetchall()],
    )
    for group in summary.isolated:
        group[name] = unit.text(group[name])
    for reason, count in conn.sql(
        f"SELECT reject_reason, count(*) FROM {rejects_table(spec)} WHERE {scope} GROUP BY 1"
    ).fetchall():
        summary.rejected_by_reason[reason] = count
    sample = conn.sql(
        # What a person reading the check needs first: the rule, where the row came from, and
        # the row as it arrived; then its typed values.
        f"""SELECT j.reject_reason, r.source_file, r.source_row, coalesce(r.raw_text, '') AS raw_text,
                {", ".join(f'r."{c}"' for c in spec.column_names)}, r.{at}
            FROM {raw_table(spec)} r JOIN (
                SELECT * FROM {rejects_table(spec)} WHERE {scope}
                QUALIFY row_number() OVER (PARTITION BY reject_reason ORDER BY source_id, source_row)
                    <= {SAMPLE_ROWS}
            ) j USING ({row_id(spec)})
            WHERE r.{scope}
            ORDER BY j.reject_reason, r.source_file, r.source_row"""
    )
    names = sample.columns
    for values in sample.fetchall():
        row = dict(zip(names, values, strict=True))
        summary.samples.setdefault(check_of_reason(row["reject_reason"]), []).append(row)
    return summary


def write_quarantine(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first: GrainValue, last: GrainValue
) -> str:
    """Replace the quarantine of grains ``first..last`` with their rejected raw rows."""
    table = f"{spec.name}.{spec.quarantine_name}"
    rejected = rejected_rows_sql(spec, partition_filter(spec, first, last))
    replace_range(conn, grain(spec).column, first, last, {table: rejected})
    return table
