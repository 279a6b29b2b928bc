"""What a partitioned asset needs of its upstream before it runs: the partitions never built, named
with the command that builds them (a missing table deep inside DuckDB or dbt says neither)."""

from __future__ import annotations

import dagster as dg


def unbuilt_partitions(
    instance: dg.DagsterInstance,
    needed_by: dg.AssetKey,
    upstream: list[dg.AssetKey],
    partition_keys: list[str],
    only_if_none_built: bool = False,
) -> list[str]:
    """One message per upstream asset with partitions of ``partition_keys`` never materialized
    (with ``only_if_none_built``: only when none of them was, so a range may hold empty days)."""
    problems = []
    first, last = partition_keys[0], partition_keys[-1]
    select = ",".join(key.to_user_string() for key in upstream)
    for key in upstream:
        built = instance.get_materialized_partitions(key)
        missing = [p for p in partition_keys if p not in built]
        if missing and (len(missing) == len(partition_keys) or not only_if_none_built):
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems.append(
                f"{needed_by.to_user_string()} needs {key.to_user_string()} for {shown}, never "
                "materialized; build it first: dagster asset materialize -m ml_platform.definitions "
                f"--partition-range {first}...{last} --select '{select}'"
            )
    return problems
