"""Counting rule violations of a partition range, for the blocking checks and the quarantine."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ml_platform.ingestion.raw import raw_table
from ml_platform.spec import UseCaseSpec
from ml_platform.validation.rules import CHECK_NAMES, check_of_reason, validated_rows_sql

SAMPLE_ROWS = 5


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


def partition_filter(first_day: dt.date, last_day: dt.date) -> str:
    return f"partition_date BETWEEN DATE '{first_day.isoformat()}' AND DATE '{last_day.isoformat()}'"


def summarize(
    conn: duckdb.DuckDBPyConnection, spec: UseCaseSpec, first_day: dt.date, last_day: dt.date
) -> ValidationSummary:
    validated = validated_rows_sql(spec, raw_table(spec), partition_filter(first_day, last_day))
    rows = conn.sql(f"SELECT count(*) FROM ({validated})").fetchall()[0][0]
    summary = ValidationSummary(rows=rows)
    for reason, count in conn.sql(
        f"SELECT reject_reason, count(*) FROM ({validated}) WHERE reject_reason IS NOT NULL GROUP BY 1"
    ).fetchall():
        summary.rejected_by_reason[reason] = count
    sample = conn.sql(
        f"""SELECT * FROM ({validated}) WHERE reject_reason IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY reject_reason ORDER BY source_file, source_row)
                <= {SAMPLE_ROWS}"""
    )
    names = sample.columns
    for values in sample.fetchall():
        row = dict(zip(names, values, strict=True))
        summary.samples.setdefault(check_of_reason(row["reject_reason"]), []).append(row)
    return summary
