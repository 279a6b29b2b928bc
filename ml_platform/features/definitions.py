"""Feature definitions: declared once, compiled to a polars expression (batch) and to an online
function over an entity's recent events (serving). Both paths come from the same object, and a
parity test holds them equal.

Semantics shared by both paths, per entity in event-time order:

- a row window of ``rows`` holds the current event and the ``rows - 1`` before it; a time window
  of ``period`` holds the events in ``(t - period, t]``;
- aggregations skip missing values; a window with no value gives null, a standard deviation
  (sample, ddof=1) of fewer than two values gives 0.0;
- a lag of ``n`` is the value ``n`` events back (null before the entity has ``n`` earlier events);
- a ratio with a zero or missing denominator is null, and so is a z-score over a window whose
  values are all equal.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

_PERIOD = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def period_timedelta(period: str) -> dt.timedelta:
    match = _PERIOD.match(period)
    if not match:
        raise ValueError(f"period {period!r} must look like 30s, 15m, 1h or 2d")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class History:
    """One entity's events up to and including the one being scored, oldest first.

    ``times`` are microseconds since the epoch (UTC); ``values`` are floats with NaN for missing,
    or, for a text column, strings with None for missing.
    """

    times: np.ndarray
    values: dict[str, np.ndarray]

    def window(self, column: str, rows: int | None, period: str | None) -> np.ndarray:
        series = self.values[column]
        if rows is not None:
            return series[-rows:]
        start = self.times[-1] - period_timedelta(period) // dt.timedelta(microseconds=1)
        return series[self.times > start]


def _finite(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _mean(values: np.ndarray) -> float | None:
    present = _finite(values)
    return float(present.mean()) if len(present) else None


def _std(values: np.ndarray) -> float:
    present = _finite(values)
    return float(present.std(ddof=1)) if len(present) >= 2 else 0.0


_ONLINE_AGG = {
    "mean": _mean,
    "std": _std,
    "min": lambda v: float(_finite(v).min()) if len(_finite(v)) else None,
    "max": lambda v: float(_finite(v).max()) if len(_finite(v)) else None,
    "count": lambda v: float(len(_finite(v))),
}


def _rolling(column: str, agg: str, rows: int | None, period: str | None, entity: str, ts: str) -> pl.Expr:
    col = pl.col(column)
    if rows is not None:
        if agg == "count":
            expr = col.is_not_null().cast(pl.Float64).rolling_sum(rows, min_samples=1)
        else:
            expr = getattr(col, f"rolling_{agg}")(rows, min_samples=2 if agg == "std" else 1)
    else:
        size = period  # polars spells durations as we do: 30s, 15m, 1h, 2d
        if agg == "count":
            expr = col.is_not_null().cast(pl.Float64).rolling_sum_by(ts, size, min_samples=1)
        else:
            expr = getattr(col, f"rolling_{agg}_by")(ts, size, min_samples=2 if agg == "std" else 1)
    if agg == "std":
        expr = expr.fill_null(0.0)
    return expr.cast(pl.Float64).over(entity)


def _window_suffix(rows: int | None, period: str | None) -> str:
    if (rows is None) == (period is None):
        raise ValueError("a window needs exactly one of rows or period")
    return str(rows) if rows is not None else period


@dataclass(frozen=True)
class Value:
    """The column itself (missing stays missing)."""

    column: str

    @property
    def name(self) -> str:
        return self.column

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return pl.col(self.column).cast(pl.Float64)

    def online(self, history: History) -> float | None:
        value = history.values[self.column][-1]
        return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Rolling:
    """mean | std | min | max | count of ``column`` over the last ``rows`` events or ``period``."""

    column: str
    agg: str
    rows: int | None = None
    period: str | None = None

    @property
    def name(self) -> str:
        return f"{self.column}_{self.agg}_{_window_suffix(self.rows, self.period)}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return _rolling(self.column, self.agg, self.rows, self.period, entity, ts)

    def online(self, history: History) -> float | None:
        return _ONLINE_AGG[self.agg](history.window(self.column, self.rows, self.period))


@dataclass(frozen=True)
class DiffFromMean:
    """``column`` minus its moving average over the window (how far the reading jumps)."""

    column: str
    rows: int | None = None
    period: str | None = None

    @property
    def name(self) -> str:
        return f"{self.column}_diff_mean_{_window_suffix(self.rows, self.period)}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return pl.col(self.column).cast(pl.Float64) - _rolling(
            self.column, "mean", self.rows, self.period, entity, ts
        )

    def online(self, history: History) -> float | None:
        value = history.values[self.column][-1]
        mean = _mean(history.window(self.column, self.rows, self.period))
        return None if math.isnan(value) or mean is None else float(value - mean)


@dataclass(frozen=True)
class ZScore:
    """How many of its own standard deviations ``column`` lies from its moving average over the
    window: a reading judged against its entity's recent history, whatever the entity's scale.
    Null when the window holds fewer than two values or they are all equal."""

    column: str
    rows: int | None = None
    period: str | None = None

    @property
    def name(self) -> str:
        return f"{self.column}_zscore_{_window_suffix(self.rows, self.period)}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        mean = _rolling(self.column, "mean", self.rows, self.period, entity, ts)
        std = _rolling(self.column, "std", self.rows, self.period, entity, ts)
        return pl.when(std > 0).then((pl.col(self.column).cast(pl.Float64) - mean) / std).otherwise(None)

    def online(self, history: History) -> float | None:
        value = history.values[self.column][-1]
        window = history.window(self.column, self.rows, self.period)
        mean, std = _mean(window), _std(window)
        if math.isnan(value) or mean is None or std <= 0:
            return None
        return float((value - mean) / std)


@dataclass(frozen=True)
class Lag:
    column: str
    n: int = 1

    @property
    def name(self) -> str:
        return f"{self.column}_lag_{self.n}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return pl.col(self.column).cast(pl.Float64).shift(self.n).over(entity)

    def online(self, history: History) -> float | None:
        series = history.values[self.column]
        if len(series) <= self.n:
            return None
        value = series[-1 - self.n]
        return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class HourOfDay:
    """Hour of the event in UTC, with minutes as a fraction (13:30 is 13.5)."""

    @property
    def name(self) -> str:
        return "hour_of_day"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        t = pl.col(ts).dt.convert_time_zone("UTC")
        return (t.dt.hour().cast(pl.Float64) + t.dt.minute().cast(pl.Float64) / 60.0).alias(self.name)

    def online(self, history: History) -> float | None:
        moment = dt.datetime.fromtimestamp(history.times[-1] / 1e6, dt.UTC)
        return moment.hour + moment.minute / 60.0


@dataclass(frozen=True)
class DayOfWeek:
    """ISO day of the event's week in UTC: Monday 1 .. Sunday 7."""

    @property
    def name(self) -> str:
        return "day_of_week"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return pl.col(ts).dt.convert_time_zone("UTC").dt.weekday().cast(pl.Float64)

    def online(self, history: History) -> float | None:
        return float(dt.datetime.fromtimestamp(history.times[-1] / 1e6, dt.UTC).isoweekday())


@dataclass(frozen=True)
class Ratio:
    numerator: str
    denominator: str

    @property
    def name(self) -> str:
        return f"{self.numerator}_per_{self.denominator}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        den = pl.col(self.denominator).cast(pl.Float64)
        return pl.when(den != 0).then(pl.col(self.numerator).cast(pl.Float64) / den).otherwise(None)

    def online(self, history: History) -> float | None:
        num, den = history.values[self.numerator][-1], history.values[self.denominator][-1]
        if math.isnan(num) or math.isnan(den) or den == 0:
            return None
        return float(num / den)


@dataclass(frozen=True)
class IsValue:
    """1.0 when a text (categorical) column holds ``value``, else 0.0; missing stays missing. One
    per category is a one-hot encoding whose vocabulary is the spec's, never the data's."""

    column: str
    value: str

    @property
    def name(self) -> str:
        return f"{self.column}_is_{re.sub(r'[^0-9a-zA-Z]+', '_', self.value).strip('_').lower()}"

    def polars(self, entity: str, ts: str) -> pl.Expr:
        return (pl.col(self.column).cast(pl.String) == self.value).cast(pl.Float64)

    def online(self, history: History) -> float | None:
        value = history.values[self.column][-1]
        return float(value == self.value) if isinstance(value, str) else None


Feature = Value | Rolling | DiffFromMean | ZScore | Lag | HourOfDay | DayOfWeek | Ratio | IsValue


def source_columns(features: tuple[Feature, ...]) -> list[str]:
    """The input columns the features read, in first-use order."""
    columns: dict[str, None] = {}
    for feature in features:
        for attr in ("column", "numerator", "denominator"):
            if hasattr(feature, attr):
                columns[getattr(feature, attr)] = None
    return list(columns)


def lookback(features: tuple[Feature, ...]) -> tuple[int, dt.timedelta]:
    """How much history the online path keeps: the largest row window (or lag) and time window."""
    rows, period = 1, dt.timedelta(0)
    for feature in features:
        rows = max(rows, getattr(feature, "rows", None) or 1, (getattr(feature, "n", 0) or 0) + 1)
        if getattr(feature, "period", None):
            period = max(period, period_timedelta(feature.period))
    return rows, period
