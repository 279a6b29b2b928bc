"""Seeded synthetic sensor readings, written into the landing zone as an outside system would.

Every day is generated from its own random stream (seed, day), so generating more days later, or
the same days again, gives identical files. Anomalies are injected as windows and written to a
labels file; ``drift_from`` shifts the distribution from that day on.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SensorDataConfig:
    sensors: int = 10
    days: int = 14
    start: dt.date | None = None  # default: `days` days ending yesterday
    interval_minutes: int = 5
    seed: int = 42
    drift_from: dt.date | None = None
    drift_shift: float = 3.0  # in units of the value's noise standard deviation

    def start_date(self) -> dt.date:
        if self.start is not None:
            return self.start
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.days)


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
    rng = np.random.default_rng([config.seed, day.toordinal()])
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


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    # Land complete files only: a sensor polling the landing zone must never see half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_sensor_data(landing_dir: Path, config: SensorDataConfig) -> list[Path]:
    """Write one CSV per day (skipping days already landed) and a labels file; return new paths."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    labels_dir = landing_dir / "labels"
    labels_dir.mkdir(exist_ok=True)
    written: list[Path] = []
    labels: list[tuple[str, dt.datetime, dt.datetime]] = []
    first = config.start_date()
    for offset in range(config.days):
        day = first + dt.timedelta(days=offset)
        frame, windows = generate_day(day, config)
        labels += windows
        path = landing_dir / f"readings_{day.isoformat()}.csv"
        if path.exists():
            continue
        _write_atomically(frame, path)
        written.append(path)
    last = first + dt.timedelta(days=config.days - 1)
    labels_path = labels_dir / f"anomalies_{first.isoformat()}_{last.isoformat()}.csv"
    if not labels_path.exists():
        label_frame = pd.DataFrame(
            [(s, a.strftime("%Y-%m-%dT%H:%M:%SZ"), b.strftime("%Y-%m-%dT%H:%M:%SZ")) for s, a, b in labels],
            columns=["sensor_id", "start", "end"],
        )
        _write_atomically(label_frame, labels_path)
        written.append(labels_path)
    return written
