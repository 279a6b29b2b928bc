"""The second shipped example: card payments scored for fraud, frauds confirmed by chargebacks days
later (a supervised binary classifier with delayed, positives-only labels, and a concept-drift
mode). Nothing outside this folder knows its columns; the platform reads them from ``SPEC``."""

import dataclasses
import datetime as dt
from pathlib import Path

from ml_platform.usecases import Example
from ml_platform.usecases.card_fraud.spec import SPEC

HISTORY_ENDS_DAYS_AGO = 15


def _land(landing: Path) -> list[Path]:
    """Three weeks of payments history ending 15 days ago, landed once: `ml-platform scenario
    concept-drift` replays the days since (a later demo adds none, so the two never overlap)."""
    from ml_platform.usecases.card_fraud.generate import PaymentsConfig, write_payments

    if any(landing.glob("payments_*.csv")):
        return []
    config = PaymentsConfig(days=21)
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=HISTORY_ENDS_DAYS_AGO)
    start = end - dt.timedelta(days=config.days - 1)
    return write_payments(landing, dataclasses.replace(config, start=start))


EXAMPLE = Example(
    land=_land,
    requests=(
        # A payment being made: scored on the card's history as if it had just arrived.
        {"card_id": "c-0001", "amount": 950.0, "merchant": "electronics", "foreign": True},
        {"card_id": "c-0001"},  # the card's newest payment, features from the online store
        {"card_id": "c-0002", "amount": 12.5, "merchant": "grocery", "foreign": False},
    ),
)

__all__ = ["EXAMPLE", "SPEC"]
