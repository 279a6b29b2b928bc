"""How an ISO-8601 text becomes a moment in UTC, for events, posted labels and labels files alike."""

from __future__ import annotations

import datetime as dt
from typing import Any


def parse_timestamp(value: Any) -> dt.datetime:
    """``value`` as a UTC datetime; a time without an offset is UTC. ValueError when it is not
    an ISO-8601 string."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    moment = dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
