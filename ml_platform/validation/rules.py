"""Row-level expectations of a use case, compiled to one SQL expression.

The same expression decides which rows are quarantined and what the blocking checks count, so
the checks and the quarantine can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml_platform.spec import UseCaseSpec


@dataclass(frozen=True)
class Rule:
    name: str  # e.g. "not_null:value"; stored as the quarantine reason
    check: str  # the asset check that counts it
    violated: str  # SQL predicate, true when the row breaks the rule


def _q(column: str) -> str:
    return f'"{column}"'


def parsed(column: str, dtype: str) -> str:
    """SQL that parses a raw text column to its declared type (NULL when it does not parse)."""
    if dtype == "timestamp":
        return f"TRY_CAST({_q(column)} AS TIMESTAMPTZ)"
    if dtype == "float":
        return f"TRY_CAST({_q(column)} AS DOUBLE)"
    return _q(column)


def row_rules(spec: UseCaseSpec) -> list[Rule]:
    """Rules in the order they are reported: the first broken one is the row's reason."""
    # A line the reader could not split into fields (its reason is the reader's error type).
    rules: list[Rule] = [Rule("parse", "parse", "parse_error IS NOT NULL")]
    for column in spec.columns:
        if column.required:
            rules.append(
                Rule(
                    f"not_null:{column.name}",
                    "not_null",
                    f"{_q(column.name)} IS NULL OR trim({_q(column.name)}) = ''",
                )
            )
    for column in spec.columns:
        if column.dtype == "string":
            continue
        value = parsed(column.name, column.dtype)
        present = f"{_q(column.name)} IS NOT NULL AND trim({_q(column.name)}) <> ''"
        bad_type = f"{value} IS NULL"
        if column.dtype == "float":
            bad_type += f" OR isnan({value}) OR isinf({value})"
        rules.append(Rule(f"type:{column.name}", "types", f"({present}) AND ({bad_type})"))
    for column in spec.numeric_columns:
        bounds = []
        value = parsed(column.name, column.dtype)
        if column.min_value is not None:
            bounds.append(f"{value} < {column.min_value!r}")
        if column.max_value is not None:
            bounds.append(f"{value} > {column.max_value!r}")
        if bounds:
            rules.append(Rule(f"range:{column.name}", "value_range", " OR ".join(bounds)))
    for column in spec.columns:
        if column.allowed_values:
            allowed = ", ".join("'" + v.replace("'", "''") + "'" for v in column.allowed_values)
            rules.append(
                Rule(f"allowed:{column.name}", "allowed_values", f"{_q(column.name)} NOT IN ({allowed})")
            )
    ts = parsed(spec.timestamp, "timestamp")
    floor = spec.expectations.timestamp_floor or spec.partitions_start
    future = int(spec.expectations.max_future.total_seconds())
    rules.append(Rule(f"future:{spec.timestamp}", "timestamps", f"{ts} > now() + INTERVAL {future} SECOND"))
    rules.append(Rule(f"too_old:{spec.timestamp}", "timestamps", f"{ts} < TIMESTAMPTZ '{floor}'"))
    return rules


def key_expressions(spec: UseCaseSpec) -> list[str]:
    by_name = {c.name: c for c in spec.columns}
    return [parsed(name, by_name[name].dtype) for name in spec.expectations.key]


def reason_sql(spec: UseCaseSpec) -> str:
    """A CASE expression giving a raw row's first broken rule (NULL when it passes every row rule)."""
    cases = "\n".join(
        # A parse failure names the reader's error (e.g. parse:MISSING COLUMNS).
        f"        WHEN {rule.violated} THEN 'parse:' || parse_error"
        if rule.name == "parse"
        else f"        WHEN {rule.violated} THEN '{rule.name}'"
        for rule in row_rules(spec)
    )
    return f"CASE\n{cases}\n        ELSE NULL END"


CHECK_NAMES = ("parse", "not_null", "types", "value_range", "allowed_values", "timestamps", "unique_key")
_CHECK_OF_PREFIX = {
    "parse": "parse",
    "not_null": "not_null",
    "type": "types",
    "range": "value_range",
    "allowed": "allowed_values",
    "future": "timestamps",
    "too_old": "timestamps",
    "duplicate_key": "unique_key",
}


def check_of_reason(reason: str) -> str:
    return _CHECK_OF_PREFIX[reason.split(":", 1)[0]]
