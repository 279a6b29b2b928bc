"""What the shipped examples' synthetic data sets share: days drawn from their own random streams
counted from an anchor day recorded in the landing zone, and files landed whole.

Every day comes from its own stream (seed, days since the anchor), so generating more days later,
or the same days again, gives identical files, and the same seed gives data of the same shape
whatever the calendar.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ANCHOR_FILE = ".synthetic_anchor"  # a dot file: the landing sensor never lists it


@dataclass(frozen=True)
class SyntheticDays:
    """Which days a synthetic data set covers and how their streams are seeded."""

    days: int = 14
    start: dt.date | None = None  # default: `days` days ending yesterday
    seed: int = 42
    # The day random streams count from; default: the landing zone's recorded anchor, else `start`.
    anchor: dt.date | None = None

    def start_date(self) -> dt.date:
        if self.start is not None:
            return self.start
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.days)

    def anchor_date(self) -> dt.date:
        return self.anchor if self.anchor is not None else self.start_date()


def landed_anchor(landing_dir: Path) -> dt.date | None:
    """The anchor day recorded when synthetic data first landed in ``landing_dir``."""
    path = landing_dir / ANCHOR_FILE
    return dt.date.fromisoformat(path.read_text().strip()) if path.exists() else None


def record_anchor(landing_dir: Path, anchor: dt.date) -> None:
    """Record ``anchor`` in the landing zone unless one is recorded already."""
    if landed_anchor(landing_dir) is None:
        write_text_atomically(anchor.isoformat(), landing_dir / ANCHOR_FILE)


def day_stream(seed: int, day: dt.date, anchor: dt.date, *extra: int) -> np.random.Generator:
    """The random stream of ``day``; ``extra`` picks an independent stream of the same day."""
    offset = (day - anchor).days
    # Seed sequences take non-negative entropy: days before the anchor map to odd numbers.
    return np.random.default_rng([seed, 2 * offset if offset >= 0 else -2 * offset - 1, *extra])


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    # Land complete files only: a sensor polling the landing zone must never see half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_text_atomically(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
