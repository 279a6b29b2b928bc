"""Example data for the `machines` use case: two series from July 2013 on very different scales,
timestamp and value only, with labelled anomaly windows. Writes CSV files as an outside system
would deliver them: `python make_data.py <landing folder of the use case>`."""

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd

out = Path(sys.argv[1])
(out / "labels").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
times = pd.date_range(dt.datetime(2013, 7, 4), periods=30 * 288, freq="5min")
hours = np.asarray(times.hour + times.minute / 60)
windows = []
for series, base, scale in (("machine_temp", 80.0, 3.0), ("cpu_load", 20000.0, 900.0)):
    value = base + scale * np.sin(2 * np.pi * hours / 24) + rng.normal(0, scale * 0.2, len(times))
    for _ in range(12):
        first, length = int(rng.integers(300, len(times) - 20)), int(rng.integers(4, 12))
        value[first : first + length] += rng.choice([-1, 1]) * scale * rng.uniform(4, 8)
        windows.append((series, times[first].isoformat(), times[first + length - 1].isoformat()))
    frame = pd.DataFrame(
        {"series": series, "ts": times.strftime("%Y-%m-%d %H:%M:%S"), "value": value.round(3)}
    )
    frame.to_csv(out / f"{series}.csv", index=False)
labels = pd.DataFrame(windows, columns=["series", "start", "end"])
labels.to_csv(out / "labels" / "windows_2013-07-04_2013-08-02.csv", index=False)
print(f"wrote {len(times) * 2} readings of 2 series and {len(windows)} anomaly windows to {out}")
