"""Small helpers that turn results into Dagster metadata people can read in the UI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_none_")
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """The metadata values of ``key``'s newest materialization ({} when it has none)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    """The asset checks that failed in run ``run_id``, in the order they were evaluated."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return [e for e in evaluations if not e.passed]


def describe_failed_check(evaluation: dg.AssetCheckEvaluation, fields: Sequence[str] = ()) -> str:
    """``asset: check`` and the named metadata fields, on one line per field."""
    lines = [f"{evaluation.asset_key.to_user_string()}: {evaluation.check_name} failed"]
    for name in fields:
        if name in evaluation.metadata:
            lines.append(f"  {name}: {evaluation.metadata[name].value}")
    return "\n".join(lines)
