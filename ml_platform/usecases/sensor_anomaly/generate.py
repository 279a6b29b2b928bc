"""Seeded synthetic sensor readings, written into the landing zone as an outside system would.

Every day is generated from its own random stream (seed, days since the data set's anchor day),
so generating more days later, or the same days again, gives identical files, and the same seed
gives data of the same shape whatever the calendar: moved to other dates, the readings, hours and
anomaly windows move with them (the pattern depends on the hour of day, never on the weekday or
the date). Anomalies are injected as windows and written to a labels file; ``drift_from`` shifts
the distribution from that day on without changing the windows, so labels stay true.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from ml_platform.usecases.synthetic import (
    SyntheticDays,
    day_stream,
    landed_anchor,
    record_anchor,
    write_csv_atomically,
)


@dataclass(frozen=True)
class SensorDataConfig(SyntheticDays):
    sensors: int = 10
    interval_minutes: int = 5
    drift_from: dt.date | None = None
    drift_shift: float = 3.0  # in units of the value's noise standard deviation


def sensor_ids(n: int) -> list[str]:
    return [f"s-{i + 1}" for i in range(n)]


def _sensor_profile(sensor: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng([seed, 10_000 + sensor])
    base = float(rng.uniform(20, 80))
    amplitude = float(rng.uniform(2, 8))
    noise = float(rng.uniform(0.5, 1.5))
    return base, amplitude, noise


def generate_day(
    day: dt.date, config: SensorDataConfig
) -> tuple[pd.DataFrame, list[tuple[str, dt.datetime, dt.datetime]]]:
    """Readings of every sensor for one day, plus the anomaly windows injected into them."""
    rng = day_stream(config.seed, day, config.anchor_date())
    steps = 24 * 60 // config.interval_minutes
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    times = [start + dt.timedelta(minutes=config.interval_minutes * i) for i in range(steps)]
    hours = np.array([t.hour + t.minute / 60 for t in times])
    drifted = config.drift_from is not None and day >= config.drift_from

    frames = []
    windows: list[tuple[str, dt.datetime, dt.datetime]] = []
    for index, sensor in enumerate(sensor_ids(config.sensors)):
        base, amplitude, noise = _sensor_profile(index, config.seed)
        daily = amplitude * np.sin(2 * np.pi * hours / 24)
        value = base + daily + rng.normal(0, noise, steps)
        temperature = 40 + 0.3 * daily + rng.normal(0, 0.5, steps)
        vibration = np.abs(rng.normal(1.0, 0.2, steps))
        if drifted:
            value = value + config.drift_shift * noise * 3
            vibration = vibration * 1.5

        # About one anomaly window per sensor per day, 3-12 readings long.
        for _ in range(rng.poisson(1.0)):
            length = int(rng.integers(3, 13))
            first = int(rng.integers(0, steps - length))
            sign = rng.choice([-1.0, 1.0])
            value[first : first + length] += sign * rng.uniform(6, 12) * noise
            vibration[first : first + length] *= rng.uniform(2.5, 4.0)
            windows.append(
                (
                    sensor,
                    times[first],
                    times[first + length - 1],
                )
            )
        frames.append(
            pd.DataFrame(
                {
                    "sensor_id": sensor,
                    "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times],
                    "value": np.round(value, 4),
                    "temperature": np.round(temperature, 3),
                    "vibration": np.round(vibration, 4),
                }
            )
        )
    return pd.concat(frames, ignore_index=True), windows


def _label_frame(windows: list[tuple[str, dt.datetime, dt.datetime]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(s, a.strftime("%Y-%m-%dT%H:%M:%SZ"), b.strftime("%Y-%m-%dT%H:%M:%SZ")) for s, a, b in windows],
        columns=["sensor_id", "start", "end"],
    )


def generated_days(config: SensorDataConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The configured days in memory, for training without a landing zone or warehouse (tests,
    benchmarks): the readings typed as staging types them, and their anomaly windows."""
    frames, windows = [], []
    for offset in range(config.days):
        frame, found = generate_day(config.start_date() + dt.timedelta(days=offset), config)
        frames.append(frame)
        windows += found
    readings = pl.from_pandas(pd.concat(frames)).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us")
    )
    spans = pl.DataFrame(windows, schema=["sensor_id", "start", "end"], orient="row").with_columns(
        pl.col("start", "end").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    )
    return readings, spans


def write_sensor_data(landing_dir: Path, config: SensorDataConfig) -> list[Path]:
    """Write one CSV per day not landed yet and one labels file covering exactly those days;
    return the new paths. The first call records its anchor in the landing zone, so later calls
    (more days, another day's `make demo`) continue the same data set."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    labels_dir = landing_dir / "labels"
    labels_dir.mkdir(exist_ok=True)
    recorded = landed_anchor(landing_dir)
    if config.anchor is None:
        config = dataclasses.replace(config, anchor=recorded or config.start_date())
    record_anchor(landing_dir, config.anchor_date())
    written: list[Path] = []
    labels: list[tuple[str, dt.datetime, dt.datetime]] = []
    days: list[dt.date] = []
    for offset in range(config.days):
        day = config.start_date() + dt.timedelta(days=offset)
        path = landing_dir / f"readings_{day.isoformat()}.csv"
        if path.exists():
            continue
        frame, windows = generate_day(day, config)
        write_csv_atomically(frame, path)
        written.append(path)
        labels += windows
        days.append(day)
    if days:
        labels_path = labels_dir / f"anomalies_{days[0].isoformat()}_{days[-1].isoformat()}.csv"
        write_csv_atomically(_label_frame(labels), labels_path)
        written.append(labels_path)
    return written


def redeliver_drifted(landing_dir: Path, days: list[dt.date], config: SensorDataConfig) -> list[Path]:
    """Land new versions of ``days`` with readings shifted from the first of them on.

    The shift leaves the anomaly windows as they were, so the labels already landed stay true
    when each day keeps its random stream: with the landing zone's recorded anchor (or an explicit
    one). A zone without a record (written before anchors were recorded) counts from its earliest
    readings file, and then the days' labels are landed again with them."""
    recorded = config.anchor or landed_anchor(landing_dir)
    if recorded is None:
        landed = sorted(landing_dir.glob("readings_????-??-??.csv"))
        earliest = dt.date.fromisoformat(landed[0].stem.removeprefix("readings_")) if landed else days[0]
    config = dataclasses.replace(config, anchor=recorded or earliest, drift_from=min(days))
    written, labels = [], []
    for day in sorted(days):
        frame, windows = generate_day(day, config)
        path = landing_dir / f"readings_{day.isoformat()}.csv"
        write_csv_atomically(frame, path)  # a complete new version, never half a file
        written.append(path)
        labels += windows
    if recorded is None:
        first, last = min(days), max(days)
        labels_path = landing_dir / "labels" / f"anomalies_{first.isoformat()}_{last.isoformat()}.csv"
        labels_path.parent.mkdir(exist_ok=True)
        write_csv_atomically(_label_frame(labels), labels_path)
        written.append(labels_path)
    return written
