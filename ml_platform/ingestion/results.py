"""What the raw-rows asset records: its blocking checks and metadata, from what the load
brought and what validation found, as plain functions."""

from typing import Any

import dagster as dg

from ml_platform.ingestion.raw import RawLoad, raw_table
from ml_platform.metadata import markdown_table
from ml_platform.partitions import GrainValue, grain
from ml_platform.spec import UseCaseSpec
from ml_platform.validation.summary import ValidationSummary

CHECK_DESCRIPTIONS = {
    "schema": "Every source parses as a whole and has the required columns; fails the run otherwise.",
    "parse": "Every line splits into fields (column count, encoding, JSON); others are quarantined.",
    "not_null": "Required fields are present; offending rows are quarantined.",
    "types": "Timestamps and numbers parse (no NaN/inf); offending rows are quarantined.",
    "value_range": "Numbers lie within the declared bounds; offending rows are quarantined.",
    "allowed_values": "Fields with a declared set of values hold one of them; others are quarantined.",
    "timestamps": "Event times are not in the future nor before the floor; others are quarantined.",
    "unique_key": "One row per key; later duplicates are quarantined.",
    "bad_sources": "A file or entity of a day over the bad share is quarantined whole; the others go on.",
    "row_count": "Rows per day within the declared bounds: above the maximum fails, below the minimum warns.",
    "bad_share": (
        "The rule-breaking share of the rows outside isolated files and entities stays under the "
        "declared maximum, and some rows are left."
    ),
}


def row_count_check(
    spec: UseCaseSpec, rows_by_grain: dict[str, int], first: GrainValue, last: GrainValue
) -> dg.AssetCheckResult:
    """Rows of each grain (day, or hour) of ``first..last`` within the declared bounds."""
    expectations = spec.expectations
    unit = grain(spec)
    counts = {unit.text(value): 0 for value in unit.values(first, last)} | rows_by_grain
    too_many = {
        d: n
        for d, n in counts.items()
        if expectations.max_rows_per_partition is not None and n > expectations.max_rows_per_partition
    }
    too_few = {d: n for d, n in counts.items() if n < expectations.min_rows_per_partition}
    return dg.AssetCheckResult(
        check_name="row_count",
        passed=not too_many and not too_few,
        severity=dg.AssetCheckSeverity.ERROR if too_many else dg.AssetCheckSeverity.WARN,
        metadata={
            "min_rows": min(counts.values()),
            "max_rows": max(counts.values()),
            "too_many": too_many,
            "too_few": too_few,
        },
    )


def isolated_description(isolated: list[dict], limit: float, at: str = "day") -> str:
    """One line per file or entity quarantined whole: which, which day (``at``: or hour), the
    rules and counts."""
    return "\n".join(
        f"{g['kind']} {g['file or entity']} on {g[at]}: {g['bad_rows']} of {g['rows']} rows broke "
        f"rules ({g['rules']}), over the limit of {limit:.0%}; quarantined whole"
        for g in isolated
    )


def bad_share_description(summary: ValidationSummary, limit: float, at: str = "day") -> str:
    """Why the partition stops: its share outside isolated sources, or nothing left, and where."""
    if summary.rows and not summary.judged_rows:
        head = f"every file and entity of these days is over the bad share of {limit:.0%}"
    else:
        head = (
            f"{summary.bad_share:.1%} of the {summary.judged_rows} rows outside isolated files and "
            f"entities broke rules (limit {limit:.0%})"
        )
    detail = isolated_description(summary.isolated, limit, at)
    return f"{head}; nothing of these days is staged" + (f"\n{detail}" if detail else "")


# A range run's metadata is carried by every partition's materialization: a range by hour lists
# each hour up to this many, beyond that (720 hours of a month) each day, summed over its hours.
LISTED_HOURS = 48


def _by_day(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-hour rows (``hour`` and counts) summed per day."""
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = days.setdefault(row["hour"][:10], {"day": row["hour"][:10]})
        for name, value in row.items():
            if name != "hour":
                day[name] = day.get(name, 0) + value
    return list(days.values())


def _rows_per_grain(load: RawLoad, at: str) -> dict[str, object]:
    counts = load.rows_by_grain
    if at == "day" or len(counts) <= LISTED_HOURS:
        return {f"rows_by_{at}": counts}
    summed = _by_day([{"hour": hour, "rows": n} for hour, n in counts.items()])
    return {"rows_by_day": {d["day"]: d["rows"] for d in summed}}


def _per_grain_table(summary: ValidationSummary, at: str) -> dict[str, object]:
    if at == "day" or len(summary.by_grain) <= LISTED_HOURS:
        return {f"by_{at}": markdown_table(summary.by_grain)}
    return {"by_day": markdown_table(_by_day(summary.by_grain))}


def raw_rows_result(
    spec: UseCaseSpec, load: RawLoad, summary: ValidationSummary, first: GrainValue, last: GrainValue
) -> dg.MaterializeResult:
    """The checks of grains ``first``..``last`` (each rule, the bad sources, row counts, the bad
    share) and the raw table's metadata (rows, files, the columns the sources delivered)."""
    checks = [
        dg.AssetCheckResult(
            check_name="schema",
            passed=not load.rejected,
            metadata={
                "rejected_files": len(load.rejected),
                "reasons": markdown_table([{"file": r.path, "reason": r.reason} for r in load.rejected]),
            },
        )
    ]
    too_many = summary.bad_share > spec.expectations.max_bad_share
    at = grain(spec).name
    isolated = isolated_description(summary.isolated, spec.expectations.max_bad_share, at)
    for name, reasons in summary.by_check().items():
        count = sum(reasons.values())
        extra = {"isolated": markdown_table(summary.isolated)} if name == "bad_sources" else {}
        checks.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=count == 0,
                # Quarantined rows are expected now and then (WARN); an excess blocks (ERROR).
                severity=dg.AssetCheckSeverity.ERROR if too_many else dg.AssetCheckSeverity.WARN,
                description=isolated if name == "bad_sources" and summary.isolated else None,
                metadata={
                    "violations": count,
                    "by_rule": markdown_table([{"rule": r, "rows": n} for r, n in reasons.items()]),
                    "sample": markdown_table(summary.samples.get(name, [])),
                    **extra,
                },
            )
        )
    checks.append(row_count_check(spec, load.rows_by_grain, first, last))
    checks.append(
        dg.AssetCheckResult(
            check_name="bad_share",
            passed=not too_many,
            description=bad_share_description(summary, spec.expectations.max_bad_share, at)
            if too_many
            else None,
            metadata={
                "bad_share": summary.bad_share,
                "max_bad_share": spec.expectations.max_bad_share,
                "quarantined_rows": summary.rejected,
                "judged_rows": summary.judged_rows,
                **_per_grain_table(summary, at),
                "isolated": markdown_table(summary.isolated),
            },
        )
    )
    seen = sorted(set().union(*load.columns_seen.values())) if load.columns_seen else spec.column_names
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": load.row_count,
            **_rows_per_grain(load, at),
            "source_files": load.files,
            "quarantined_rows": summary.rejected,
            "table": raw_table(spec),
            # The columns the sources delivered: a change shows in the schema-change check.
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, "string") for name in seen]
            ),
        },
        check_results=checks,
    )
