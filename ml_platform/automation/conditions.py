"""Declarative automation conditions shared by the use cases' assets."""

import dagster as dg


def follow_upstream() -> dg.AutomationCondition:
    """Rematerialize a partition whenever one of its upstream partitions was updated after it.

    Unlike ``eager()`` this is not limited to the latest time window: a late or corrected file
    for an old day lands in that day's raw partition, and that day's staging and features follow.
    Partitions that were never materialized are not backfilled by it.

    "After it" is by materialization time: a run that updates the upstream partitions and then
    this one (the landing run, raw rows to features over a range of days) leaves nothing to
    follow. Dagster's ``any_deps_updated()`` tells that by the latest run of the whole asset, so
    it would stage every day of such a range again but its last. A partition requested once is
    not requested again until an upstream updates anew (a failed run is not retried each tick).
    """
    upstream_updated = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated() | dg.AutomationCondition.will_be_requested()
    )
    return (
        upstream_updated.since(dg.AutomationCondition.newly_updated())
        & upstream_updated.since(dg.AutomationCondition.newly_requested())
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


def on_cron_after_any_update(cron: str) -> dg.AutomationCondition:
    """Once per tick of ``cron``, after any upstream was updated since the tick.

    ``on_cron`` waits for every upstream: a monitor reading the predictions ingested every tick and
    the labels would then run only in periods when labels landed too, though predictions that
    mature (their labels' lateness passed) change what it reports without any new label.
    """
    tick = dg.AutomationCondition.cron_tick_passed(cron)
    updated = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated().since(tick) | dg.AutomationCondition.will_be_requested()
    )
    return (tick.since_last_handled() & updated & ~dg.AutomationCondition.in_progress()).with_label(
        f"on cron {cron}, after any upstream update"
    )
