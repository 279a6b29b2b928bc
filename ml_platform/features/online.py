"""The online path: an entity's recent events, updated one event at a time, and its feature vector.

The vector is computed by the same feature definitions as the batch path (``Feature.online`` over
the entity's ``History``). Documented behaviour for the stream:

- an event is inserted in event-time order, so a late event within the kept history is placed
  where it belongs and the newest vector reflects it;
- a second event with the same timestamp as a kept one is a duplicate and is ignored (the first
  wins, as in the batch path's deduplication);
- an event older than everything kept while the history is full is too late for the online path
  (ignored there; the batch path still ingests it from the landing zone).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_platform.features.definitions import History, lookback
from ml_platform.spec import UseCaseSpec

_US = dt.timedelta(microseconds=1)


def to_micros(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // _US


def from_micros(micros: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


@dataclass
class EntityState:
    """Kept events of one entity (oldest first) and the feature vector of the newest one."""

    times: list[int] = field(default_factory=list)  # microseconds since the epoch, UTC
    values: dict[str, list[float | str | None]] = field(default_factory=dict)  # NaN / None: missing
    vector: dict[str, float | None] = field(default_factory=dict)

    @property
    def event_timestamp(self) -> dt.datetime | None:
        return from_micros(self.times[-1]) if self.times else None

    def to_json(self) -> dict[str, Any]:
        return {
            "times": self.times,
            "values": {c: [_json_cell(v) for v in vs] for c, vs in self.values.items()},
            "vector": self.vector,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntityState:
        return cls(
            times=list(data["times"]),
            values={c: [_cell(v) for v in vs] for c, vs in data["values"].items()},
            vector=dict(data["vector"]),
        )


def _json_cell(value: float | str | None) -> float | str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _cell(value: Any, text: bool = False) -> float | str | None:
    """A kept value: a string for a text column (None when missing), else a float (NaN)."""
    if text or isinstance(value, str):
        return None if value is None else str(value)
    return math.nan if value is None else float(value)


class OnlineFeatures:
    """Applies events to entity states with a use case's feature definitions."""

    def __init__(self, spec: UseCaseSpec) -> None:
        self.spec = spec
        self.features = spec.features.features
        self.columns = spec.features.source_columns()
        self.text = spec.text_column_names
        self.keep_rows, keep_period = lookback(self.features)
        self.keep_micros = keep_period // _US

    def history(self, state: EntityState, upto: int | None = None) -> History:
        end = len(state.times) if upto is None else bisect.bisect_right(state.times, upto)
        return History(
            np.asarray(state.times[:end], dtype=np.int64),
            {
                c: np.asarray(state.values[c][:end], dtype=object if c in self.text else np.float64)
                for c in self.columns
            },
        )

    def vector(self, state: EntityState, upto: int | None = None) -> dict[str, float | None]:
        history = self.history(state, upto)
        return {f.name: f.online(history) for f in self.features}

    def apply(
        self, state: EntityState | None, timestamp: dt.datetime, values: dict[str, Any]
    ) -> tuple[EntityState, bool]:
        """Add one event; returns the new state and whether the event changed it."""
        state = state or EntityState(values={c: [] for c in self.columns})
        micros = to_micros(timestamp)
        position = bisect.bisect_left(state.times, micros)
        if position < len(state.times) and state.times[position] == micros:
            return state, False  # duplicate: the first event with this timestamp wins
        if position == 0 and state.times and self._full(state):
            return state, False  # older than all kept history: too late for the online path
        state.times.insert(position, micros)
        for column in self.columns:
            state.values[column].insert(position, _cell(values.get(column), column in self.text))
        self._trim(state)
        state.vector = self.vector(state)
        return state, True

    def _full(self, state: EntityState) -> bool:
        return len(state.times) >= self.keep_rows and state.times[-1] - state.times[0] >= self.keep_micros

    def _trim(self, state: EntityState) -> None:
        """Drop events that no window of the newest event can reach any more."""
        newest = state.times[-1]
        drop = 0
        while len(state.times) - drop > self.keep_rows and newest - state.times[drop] >= self.keep_micros:
            drop += 1
        if drop:
            del state.times[:drop]
            for column in self.columns:
                del state.values[column][:drop]

    def state_from_events(self, times: list[dt.datetime], rows: list[dict[str, Any]]) -> EntityState:
        """A state built from an entity's deduplicated events in time order (the batch tail)."""
        state = EntityState(
            times=[to_micros(t) for t in times],
            values={c: [_cell(r.get(c), c in self.text) for r in rows] for c in self.columns},
        )
        if state.times:
            self._trim(state)
            state.vector = self.vector(state)
        return state
