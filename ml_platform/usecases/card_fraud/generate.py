"""Seeded synthetic card payments and the chargebacks that confirm frauds days later.

Each card has a usual amount and a home country; it pays a few times a day at one of five kinds of
merchant. About 2% of payments are frauds. Before ``concept_drift_from`` a fraud looks like an
unusually large payment abroad, at an electronics or online merchant, at night; from that day on
frauds are small payments at fuel stations and groceries at home, while what payments look like
barely moves (the same amounts, merchants and countries): only the relation between inputs and
label changes, which data drift alone does not see.

Like the sensor example, every day comes from its own random stream (seed, days since the data
set's anchor), so the same seed gives the same payments whatever the calendar. Payments land as
one CSV per day; chargebacks (``card_id, at, fraud`` with ``fraud = 1``, frauds only) land as one
labels file covering the days whose frauds are known by now: a day's chargebacks have all arrived
once ``label_delay_days`` have passed since its end (so a history that ended long ago has them all).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.usecases.card_fraud.spec import MERCHANTS
from ml_platform.usecases.synthetic import (
    SyntheticDays,
    day_stream,
    landed_anchor,
    record_anchor,
    write_csv_atomically,
)


@dataclass(frozen=True)
class PaymentsConfig(SyntheticDays):
    days: int = 21
    seed: int = 7
    cards: int = 300
    payments_per_day: float = 3.0  # per card, Poisson
    fraud_share: float = 0.02
    concept_drift_from: dt.date | None = None
    label_delay_days: int = 3


def card_ids(n: int) -> list[str]:
    return [f"c-{i + 1:04d}" for i in range(n)]


def _cards(config: PaymentsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each card's usual amount and how often it pays abroad (fixed by the seed, not the day)."""
    rng = np.random.default_rng([config.seed, 1])
    usual = np.exp(rng.normal(3.6, 0.6, config.cards))  # about 37 on average
    abroad = rng.beta(1, 15, config.cards)
    return usual, abroad


def _logit_shift(config: PaymentsConfig, day: dt.date) -> bool:
    return config.concept_drift_from is not None and day >= config.concept_drift_from


def _at_share(logits: np.ndarray, share: float) -> np.ndarray:
    """Probabilities ``sigmoid(logits + c)`` whose mean is ``share``: the intercept ``c`` found by
    bisection, so both regimes hold the same share of frauds."""
    low, high = -40.0, 40.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(logits + middle)))) > share:
            high = middle
        else:
            low = middle
    return 1 / (1 + np.exp(-(logits + low)))


def generate_day(day: dt.date, config: PaymentsConfig) -> pd.DataFrame:
    """Every card's payments of ``day`` with their ``fraud`` label (0 / 1)."""
    rng = day_stream(config.seed, day, config.anchor_date())
    usual, abroad = _cards(config)
    counts = rng.poisson(config.payments_per_day, config.cards)
    card = np.repeat(np.arange(config.cards), counts)
    n = len(card)
    seconds = rng.integers(0, 86_400, n)
    hour = seconds / 3600
    merchant = rng.choice(len(MERCHANTS), n, p=[0.35, 0.2, 0.1, 0.1, 0.25])
    amount = usual[card] * np.exp(rng.normal(0, 0.5, n))
    foreign = rng.random(n) < abroad[card]
    night = (hour < 6) | (hour >= 23)
    if _logit_shift(config, day):
        small = amount < 0.6 * usual[card]
        everyday = np.isin(merchant, [0, 1])  # grocery, fuel
        score = 2.2 * small + 2.0 * everyday + 1.5 * night - 1.5 * foreign
    else:
        large = amount > 1.6 * usual[card]
        risky = np.isin(merchant, [2, 4])  # electronics, online
        score = 2.2 * large + 2.0 * risky + 1.5 * night + 2.0 * foreign
    probability = _at_share(2.2 * score, config.fraud_share)
    fraud = rng.random(n) < probability
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    times = [start + dt.timedelta(seconds=int(s)) for s in seconds]
    frame = pd.DataFrame(
        {
            "card_id": np.array(card_ids(config.cards))[card],
            "at": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times],
            "amount": np.round(amount, 2),
            "merchant": np.array(MERCHANTS)[merchant],
            "foreign": np.where(foreign, "true", "false"),
            "fraud": fraud.astype(int),
        }
    )
    # One payment per card and second; in time order, as a payments system exports them.
    return frame.drop_duplicates(["card_id", "at"]).sort_values(["at", "card_id"]).reset_index(drop=True)


def labelled_days(labels_dir: Path) -> set[dt.date]:
    """Days a chargebacks file already covers (``chargebacks_<first>_<last>.csv``)."""
    covered: set[dt.date] = set()
    for path in labels_dir.glob("chargebacks_*_*.csv"):
        first, last = (dt.date.fromisoformat(p) for p in path.stem.split("_")[1:3])
        covered |= {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    return covered


def write_payments(landing_dir: Path, config: PaymentsConfig) -> list[Path]:
    """One CSV of payments per day not landed yet, and one chargebacks file covering every day
    whose frauds are known by now (``label_delay_days`` after the day's end) and not covered yet;
    returns the new paths. Later calls continue the same data set (the anchor is recorded)."""
    labels_dir = landing_dir / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    if config.anchor is None:
        config = dataclasses.replace(config, anchor=landed_anchor(landing_dir) or config.start_date())
    record_anchor(landing_dir, config.anchor_date())
    written: list[Path] = []
    for offset in range(config.days):
        day = config.start_date() + dt.timedelta(days=offset)
        path = landing_dir / f"payments_{day.isoformat()}.csv"
        if not path.exists():
            write_csv_atomically(generate_day(day, config).drop(columns="fraud"), path)
            written.append(path)
    newest = config.start_date() + dt.timedelta(days=config.days - 1)
    today = dt.datetime.now(dt.UTC).date()
    known_until = min(newest, today - dt.timedelta(days=config.label_delay_days + 1))
    landed = sorted(
        dt.date.fromisoformat(p.stem.removeprefix("payments_")) for p in landing_dir.glob("payments_*.csv")
    )
    due = [d for d in landed if d <= known_until and d not in labelled_days(labels_dir)]
    if due:
        frauds = [generate_day(d, config).query("fraud == 1")[["card_id", "at", "fraud"]] for d in due]
        path = labels_dir / f"chargebacks_{due[0].isoformat()}_{due[-1].isoformat()}.csv"
        write_csv_atomically(pd.concat(frauds), path)
        written.append(path)
    return written
