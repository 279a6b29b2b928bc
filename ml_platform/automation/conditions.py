"""Declarative automation conditions shared by the use cases' assets."""

import dagster as dg


def follow_upstream() -> dg.AutomationCondition:
    """Rematerialize a partition whenever one of its upstream partitions was updated.

    Unlike ``eager()`` this is not limited to the latest time window: a late or corrected file
    for an old day lands in that day's raw partition, and that day's staging and features follow.
    Partitions that were never materialized are not backfilled by it.
    """
    return (
        dg.AutomationCondition.any_deps_updated()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follow upstream")


def after_any_update() -> dg.AutomationCondition:
    """Materialize once after any upstream update (of any partition), when none is in progress.

    For an unpartitioned asset reading a daily-partitioned one: ``eager()`` would wait for every
    daily partition since the first to exist, which never happens.
    """
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after any upstream update")
