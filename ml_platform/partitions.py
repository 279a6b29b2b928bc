"""A use case's time partitions: by day (the default) or by month, as its spec says.

The warehouse stores rows by day (``partition_date``) whatever the partitions, so a partition is
always a run of whole days and a run replaces exactly those days. A month of old recordings is then
one partition instead of thirty, and a late file for one day re-ingests its month.
"""

import datetime as dt

import dagster as dg

from ml_platform.spec import UseCaseSpec

_DEFINITIONS: dict[str, type[dg.TimeWindowPartitionsDefinition]] = {
    "daily": dg.DailyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}


def time_partitions(spec: UseCaseSpec) -> dg.TimeWindowPartitionsDefinition:
    """From the partition holding ``partitions_start``: Dagster's monthly partitions would begin at
    the first whole month after it and leave its own month's days out (rows before the start are
    still refused). end_offset=1: the current day's (or month's) partition exists, so data landing
    now is ingested now."""
    start = partition_of_day(spec, spec.partitions_start)
    return _DEFINITIONS[spec.partitions](start_date=start, end_offset=1)


def partition_of_day(spec: UseCaseSpec, day: str | dt.date) -> str:
    """The key of the partition holding ``day`` (``YYYY-MM-DD``)."""
    value = day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
    return (value.replace(day=1) if spec.partitions == "monthly" else value).isoformat()


def partitions_of_days(spec: UseCaseSpec, days: list[str] | list[dt.date]) -> list[str]:
    """The keys of the partitions holding ``days``, each once, in order."""
    return sorted({partition_of_day(spec, day) for day in days})


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The first and last day of the run's partitions (a range when backfilled in one run)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
