"""A use case's time partitions: by day (the default), by hour or by month, as its spec says.

The warehouse stores rows by a grain: the UTC day of their timestamp (``partition_date``) for
daily and monthly partitions, the UTC hour (``partition_hour``) for hourly ones. A partition is
always a run of whole grains, and a run replaces exactly those: a month of old recordings is one
partition instead of thirty, a late file for one day re-ingests its month, and an hour's run
leaves the other hours of its day as they were.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg

from ml_platform.spec import UseCaseSpec

GrainValue = dt.date | dt.datetime  # a day, or an hour as a naive UTC datetime


@dataclass(frozen=True)
class Grain:
    """The unit rows are stored and replaced by."""

    name: str  # "day" or "hour"
    column: str  # the rows' column holding their grain
    sql_type: str
    step: dt.timedelta

    @property
    def hourly(self) -> bool:
        return self.step < dt.timedelta(days=1)

    @property
    def micros(self) -> int:
        """The step in microseconds, for SQL arithmetic on epochs."""
        return self.step // dt.timedelta(microseconds=1)

    def of(self, timestamp: str) -> str:
        """SQL: the UTC grain of a TIMESTAMP(TZ) expression, by arithmetic on its epoch (no
        time-zone library per row)."""
        units = f"CAST(floor(epoch_us({timestamp}) / {self.micros}) AS BIGINT)"
        if self.hourly:
            return f"make_timestamp({units} * {self.micros})"
        return f"(DATE '1970-01-01' + CAST({units} AS INTEGER))"

    def literal(self, value: GrainValue) -> str:
        return f"{self.sql_type} '{self.text(value)}'"

    def text(self, value: GrainValue) -> str:
        """As DuckDB casts the column to VARCHAR: ``2014-05-01`` or ``2014-05-01 05:00:00``."""
        return value.isoformat(sep=" ") if self.hourly else value.isoformat()

    def of_time(self, moment: dt.datetime) -> GrainValue:
        """The grain holding an aware (or naive UTC) datetime."""
        utc = moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment
        return utc.replace(minute=0, second=0, microsecond=0) if self.hourly else utc.date()

    def start(self, value: GrainValue) -> dt.datetime:
        """The grain's first instant, UTC."""
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC)
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)

    def span(self, first: GrainValue, last: GrainValue) -> tuple[dt.datetime, dt.datetime]:
        """``first..last`` as a half-open window of UTC instants."""
        return self.start(first), self.start(last) + self.step

    def values(self, first: GrainValue, last: GrainValue) -> list[GrainValue]:
        """Every grain of ``first..last``."""
        found, value = [], first
        while value <= last:
            found.append(value)
            value = value + self.step
        return found

    def days(self, first: GrainValue, last: GrainValue) -> tuple[dt.date, dt.date]:
        """The days ``first..last`` lie in."""
        return _day(first), _day(last)


DAY = Grain("day", "partition_date", "DATE", dt.timedelta(days=1))
HOUR = Grain("hour", "partition_hour", "TIMESTAMP", dt.timedelta(hours=1))

_DEFINITIONS: dict[str, type[dg.TimeWindowPartitionsDefinition]] = {
    "daily": dg.DailyPartitionsDefinition,
    "hourly": dg.HourlyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}
_KEY_FORMAT = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%d-%H:%M", "monthly": "%Y-%m-%d"}


def _day(value: GrainValue) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def grain(spec: UseCaseSpec) -> Grain:
    return HOUR if spec.partitions == "hourly" else DAY


def time_partitions(spec: UseCaseSpec) -> dg.TimeWindowPartitionsDefinition:
    """From the partition holding ``partitions_start``: Dagster's monthly partitions would begin at
    the first whole month after it and leave its own month's days out (rows before the start are
    still refused). end_offset=1: the current hour's, day's or month's partition exists, so data
    landing now is ingested now."""
    start = dt.datetime.strptime(partition_of(spec, spec.partitions_start), _KEY_FORMAT[spec.partitions])
    return _DEFINITIONS[spec.partitions](start_date=start, end_offset=1)


def partition_of(spec: UseCaseSpec, value: GrainValue | str) -> str:
    """The key of the partition holding a grain (a day, or an hour), given as a value or as text
    (``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS``)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if spec.partitions == "hourly":
        moment = value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
        return HOUR.of_time(moment).strftime(_KEY_FORMAT["hourly"])
    day = DAY.of_time(value) if isinstance(value, dt.datetime) else value
    return (day.replace(day=1) if spec.partitions == "monthly" else day).isoformat()


def partitions_of(spec: UseCaseSpec, values: list[str] | list[GrainValue]) -> list[str]:
    """The keys of the partitions holding ``values`` (grains), each once, in order."""
    return sorted({partition_of(spec, value) for value in values})


def contiguous_ranges(
    partitions: dg.TimeWindowPartitionsDefinition, keys: list[str]
) -> list[tuple[str, str]]:
    """``keys`` as runs of adjacent partitions, each (first, last): a burst of landed days (or a
    file over many hours) is then one run each, not one per partition."""
    ranges: list[list[str]] = []
    for key in sorted(keys):
        window = partitions.time_window_for_partition_key(key)
        if ranges and partitions.time_window_for_partition_key(ranges[-1][1]).end == window.start:
            ranges[-1][1] = key
        else:
            ranges.append([key, key])
    return [(first, last) for first, last in ranges]


def last_partition_of_day(spec: UseCaseSpec, day: dt.date) -> str:
    """The key of the day's last partition: its last hour for hourly partitions."""
    return partition_of(spec, dt.datetime.combine(day, dt.time(23)) if grain(spec).hourly else day)


def partition_grains(context: dg.AssetExecutionContext, spec: UseCaseSpec) -> tuple[GrainValue, GrainValue]:
    """The first and last grain of the run's partitions (a range when backfilled in one run)."""
    window = context.partition_time_window
    unit = grain(spec)
    return unit.of_time(window.start), unit.of_time(window.end - unit.step)


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The first and last day the run's partitions lie in (an hour's run: its day)."""
    window = context.partition_time_window
    return window.start.astimezone(dt.UTC).date(), (window.end - dt.timedelta(microseconds=1)).astimezone(
        dt.UTC
    ).date()
