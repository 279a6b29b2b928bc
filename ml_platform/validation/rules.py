"""How raw text becomes typed values, and the row-level expectations of a use case as SQL.

Typing happens once, when rows land: each column is parsed to its declared type, and a row
with a value that does not parse keeps its original text (``raw_text``, a JSON object of its
fields) so nothing is lost. The row rules then run on typed columns; one CASE expression decides
which rows are quarantined and what the blocking checks count, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml_platform.partitions import grain
from ml_platform.spec import Column, UseCaseSpec

SQL_TYPES = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "float": "DOUBLE",
    "integer": "BIGINT",
    "boolean": "BOOLEAN",  # true/false, t/f, 1/0
}


@dataclass(frozen=True)
class Rule:
    name: str  # e.g. "not_null:value"; stored as the quarantine reason
    check: str  # the asset check that counts it
    violated: str  # SQL predicate over a raw row, true when the row breaks the rule


def _q(column: str) -> str:
    return f'"{column}"'


def typed(column: Column) -> str:
    """SQL parsing a source column (text, or already typed) to the column's declared type."""
    if column.dtype == "string":
        return f"CAST({_q(column.name)} AS VARCHAR)"
    if column.dtype == "integer":
        # DuckDB's cast rounds '1.5' to 2 and reads '1e3': only whole numbers written as such parse.
        text = f"trim(CAST({_q(column.name)} AS VARCHAR))"
        return f"CASE WHEN regexp_full_match({text}, '[+-]?[0-9]+') THEN TRY_CAST({text} AS BIGINT) END"
    return f"TRY_CAST({_q(column.name)} AS {SQL_TYPES[column.dtype]})"


def _has_text(text: str) -> str:
    return f"nullif(trim({text}), '') IS NOT NULL"


def raw_text(columns: list[Column]) -> str:
    """SQL keeping a source row's fields as a JSON object of text, only if a value does not parse."""
    unparsed = " OR ".join(
        f"({typed(c)} IS NULL AND {_has_text(f'CAST({_q(c.name)} AS VARCHAR)')})"
        for c in columns
        if c.dtype != "string"
    )
    fields = ", ".join(f"{_q(c.name)} := CAST({_q(c.name)} AS VARCHAR)" for c in columns)
    if not unparsed:
        return "NULL::VARCHAR"
    return f"CASE WHEN {unparsed} THEN CAST(to_json(struct_pack({fields})) AS VARCHAR) END"


def typed_select(spec: UseCaseSpec, present: set[str], line: str | None = None) -> str:
    """The SELECT list typing a source's rows: every column of the spec (NULL when the source
    lacks it); ``raw_text``: ``line`` (the unsplit input) when given and set, else the fields of a
    row with a value that does not parse; and ``event_grain``, the UTC day (or hour, for hourly
    partitions) of the row's timestamp."""
    columns = list(spec.columns)
    by_name = {c.name: c for c in columns}
    values = [typed(c) if c.name in present else f"NULL::{SQL_TYPES[c.dtype]}" for c in columns]
    text = raw_text([c for c in columns if c.name in present])
    if line is not None:
        text = f"coalesce({line}, {text})"
    timestamp = typed(by_name[spec.timestamp]) if spec.timestamp in present else "NULL::TIMESTAMPTZ"
    selected = [f"{value} AS {_q(c.name)}" for value, c in zip(values, columns, strict=True)]
    return ", ".join([*selected, f"{text} AS raw_text", f"{grain(spec).of(timestamp)} AS event_grain"])


def _text_of(column: str) -> str:
    """The original text of a typed column that did not parse (NULL when it parsed or was absent)."""
    # parse_error rows keep their unsplit line in raw_text, which is not JSON.
    return f"CASE WHEN parse_error IS NULL AND raw_text IS NOT NULL THEN raw_text ->> '{column}' END"


def row_rules(spec: UseCaseSpec) -> list[Rule]:
    """Rules in the order they are reported: the first broken one is the row's reason."""
    # A line the reader could not split into fields (its reason is the reader's error type).
    rules: list[Rule] = [Rule("parse", "parse", "parse_error IS NOT NULL")]
    for column in spec.columns:
        if not column.required:
            continue
        if column.dtype == "string":
            missing = f"{_q(column.name)} IS NULL OR trim({_q(column.name)}) = ''"
        else:
            missing = f"{_q(column.name)} IS NULL AND NOT {_has_text(_text_of(column.name))}"
        rules.append(Rule(f"not_null:{column.name}", "not_null", missing))
    for column in spec.columns:
        if column.dtype == "string":
            continue
        bad_type = f"{_q(column.name)} IS NULL AND {_has_text(_text_of(column.name))}"
        if column.dtype == "float":
            bad_type += f" OR isnan({_q(column.name)}) OR isinf({_q(column.name)})"
        rules.append(Rule(f"type:{column.name}", "types", bad_type))
    for column in spec.numeric_columns:
        bounds = []
        if column.min_value is not None:
            bounds.append(f"{_q(column.name)} < {column.min_value!r}")
        if column.max_value is not None:
            bounds.append(f"{_q(column.name)} > {column.max_value!r}")
        if bounds:
            rules.append(Rule(f"range:{column.name}", "value_range", " OR ".join(bounds)))
    for column in spec.columns:
        if column.allowed_values:
            allowed = ", ".join("'" + v.replace("'", "''") + "'" for v in column.allowed_values)
            rules.append(
                Rule(
                    f"allowed:{column.name}",
                    "allowed_values",
                    f"CAST({_q(column.name)} AS VARCHAR) NOT IN ({allowed})",
                )
            )
    ts = _q(spec.timestamp)
    floor = spec.expectations.timestamp_floor or spec.partitions_start
    future = int(spec.expectations.max_future.total_seconds())
    rules.append(Rule(f"future:{spec.timestamp}", "timestamps", f"{ts} > now() + INTERVAL {future} SECOND"))
    rules.append(Rule(f"too_old:{spec.timestamp}", "timestamps", f"{ts} < TIMESTAMPTZ '{floor}'"))
    return rules


def key_columns(spec: UseCaseSpec) -> list[str]:
    return [_q(name) for name in spec.expectations.key]


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


CHECK_NAMES = (
    "parse",
    "not_null",
    "types",
    "value_range",
    "allowed_values",
    "timestamps",
    "unique_key",
    "bad_sources",
)
_CHECK_OF_PREFIX = {
    "parse": "parse",
    "not_null": "not_null",
    "type": "types",
    "range": "value_range",
    "allowed": "allowed_values",
    "future": "timestamps",
    "too_old": "timestamps",
    "duplicate_key": "unique_key",
    "bad_file": "bad_sources",
    "bad_entity": "bad_sources",
}


def check_of_reason(reason: str) -> str:
    return _CHECK_OF_PREFIX[reason.split(":", 1)[0]]
