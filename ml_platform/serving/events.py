"""Real-time events: validated, appended durably to the landing zone (or the landing inbox in
PostgreSQL, ``serving/inbox.py``), then folded into the online features of their entity.

The append comes first and is fsynced (committed) before anything is acknowledged: an
acknowledged event is durable, and the batch path ingests it later from there (at-least-once
delivery; the key's uniqueness makes the staged rows exactly-once).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_platform.features.online import EntityState, OnlineFeatures
from ml_platform.features.online_store import OnlineStore, unavailable
from ml_platform.serving.inbox import EVENTS, PostgresInbox
from ml_platform.settings import Settings
from ml_platform.spec import NUMBER_DTYPES, Column, UseCaseSpec
from ml_platform.timestamps import parse_timestamp


@dataclass(frozen=True)
class Ingested:
    accepted: int  # events appended to the landing zone
    online_error: str | None = None  # why the online features were not updated, if they were not


class EventError(ValueError):
    """An event that breaks the use case's input schema; the message names the item and field."""


def validate_event(
    spec: UseCaseSpec, item: Any, index: int, where: str | None = None
) -> tuple[dt.datetime, dict[str, Any]]:
    """The event's time and values, or an EventError naming what is wrong (``where`` it is)."""
    where = where or f"event {index}"
    if not isinstance(item, dict):
        raise EventError(f"{where}: must be a JSON object")
    unknown = sorted(set(item) - set(spec.column_names))
    if unknown:
        raise EventError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for column in spec.columns:
        value = item.get(column.name)
        if value is None:
            if column.required:
                raise EventError(f"{where}: field '{column.name}' is required")
            continue
        if column.dtype == "string" and (not isinstance(value, str) or not value):
            raise EventError(f"{where}: field '{column.name}' must be a non-empty string")
        if column.allowed_values and value not in column.allowed_values:
            allowed = ", ".join(column.allowed_values)
            raise EventError(f"{where}: field '{column.name}' is {value!r}, not one of {allowed}")
        if column.dtype == "boolean" and not isinstance(value, bool):
            raise EventError(f"{where}: field '{column.name}' must be true or false")
        if column.dtype == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            raise EventError(f"{where}: field '{column.name}' must be an integer")
        if column.dtype in NUMBER_DTYPES:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise EventError(f"{where}: field '{column.name}' must be a finite number")
            if column.min_value is not None and value < column.min_value:
                raise EventError(f"{where}: field '{column.name}' is below {column.min_value}")
            if column.max_value is not None and value > column.max_value:
                raise EventError(f"{where}: field '{column.name}' is above {column.max_value}")
    try:
        moment = parse_timestamp(item[spec.timestamp])
    except ValueError as exc:
        raise EventError(f"{where}: field '{spec.timestamp}' {exc}") from None
    return moment, item


def events_of(spec: UseCaseSpec, payload: Any) -> list[Any]:
    """One event, a list of them, or ``{"events": [...]}`` (also under the spec's table name)."""
    wrappers = ("events", spec.table)
    if isinstance(payload, list):
        items = payload
    elif isinstance(payload, dict) and (key := next((k for k in wrappers if k in payload), None)):
        items = payload[key]
    else:
        items = [payload]
    if not isinstance(items, list) or not items:
        raise EventError('send one event (a JSON object), a non-empty list of them, or {"events": [...]}')
    return items


def example_value(spec: UseCaseSpec, column: Column) -> Any:
    """A value of ``column`` that passes its rules, for documentation and examples."""
    if column.name == spec.entity:
        return f"{column.name.removesuffix('_id')}-1"
    if column.allowed_values:
        return column.allowed_values[0]
    if column.dtype == "timestamp":
        return "2026-01-01T00:00:00Z"
    if column.dtype == "string":
        return "a"
    if column.dtype == "boolean":
        return True
    low = column.min_value if column.min_value is not None else 0.0
    high = column.max_value if column.max_value is not None else low + 2.0
    return int((low + high) // 2) if column.dtype == "integer" else (low + high) / 2


def example_event(spec: UseCaseSpec) -> dict[str, Any]:
    """An event with the spec's required columns, as ``POST /v1/events/{use_case}`` takes it."""
    return {c.name: example_value(spec, c) for c in spec.columns if c.required}


class OnlineStoreDown(RuntimeError):
    """The online store could not be read: the request is not the caller's fault (503)."""


class EventLog:
    """Append-only JSON lines in the landing zone, one file per writer process and day; or, given
    an inbox, the same lines as rows of it (``serving/inbox.py``), landed by the landing sensor."""

    def __init__(self, landing_dir: Path, use_case: str, inbox: PostgresInbox | None = None) -> None:
        self.landing_dir = landing_dir
        self.use_case = use_case
        self.inbox = inbox
        # Starting with the writer's start time, file names list in the order writers started.
        started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        self.writer = f"{started}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def append(self, items: list[dict[str, Any]]) -> None:
        day = dt.datetime.now(dt.UTC).date().isoformat()
        name = f"events_{day}_{self.writer}"
        data = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()
        if self.inbox is not None:
            self.inbox.put(self.use_case, EVENTS, name, data)
            return
        self.landing_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.landing_dir / f"{name}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write: lines from one batch are never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)


class EventIngestor:
    def __init__(
        self, settings: Settings, spec: UseCaseSpec, store: OnlineStore, inbox: PostgresInbox | None = None
    ) -> None:
        self.spec = spec
        self.store = store
        self.online = OnlineFeatures(spec)
        self.log = EventLog(settings.landing_dir_for(spec.name), spec.name, inbox)

    def ingest(self, payload: Any) -> Ingested:
        """Validate every event (all or none), append them durably, update online features.

        Once appended, the events are accepted whatever happens next: when the online store is
        down, the batch path still brings them to the warehouse and the online features."""
        validated = [
            validate_event(self.spec, item, i) for i, item in enumerate(events_of(self.spec, payload))
        ]
        self.log.append([item for _, item in validated])
        try:
            for moment, item in validated:
                entity = item[self.spec.entity]
                self.store.update(
                    self.spec.name, entity, lambda state, m=moment, v=item: self.online.apply(state, m, v)
                )
        except Exception as exc:  # landed already: say that the online features lag, and why
            return Ingested(len(validated), unavailable(self.store, exc))
        return Ingested(len(validated))

    def features_of_event(self, item: dict[str, Any], where: str) -> tuple[dt.datetime, dict[str, Any]]:
        """The feature vector of an event sent with a request, computed on its entity's online
        history as if it had just arrived (at its own time, or now when it gives none), without
        storing anything; an entity with no history is scored on this event alone."""
        if item.get(self.spec.timestamp) is None:
            item = {**item, self.spec.timestamp: dt.datetime.now(dt.UTC).isoformat()}
        moment, values = validate_event(self.spec, item, 0, where)
        try:
            kept = self.store.state(self.spec.name, values[self.spec.entity])
        except Exception as exc:  # down or locked; any other failure is ours and must not read so
            raise OnlineStoreDown(unavailable(self.store, exc)) from exc
        state = EntityState.from_json(kept.to_json()) if kept is not None else None  # a copy
        scored, _ = self.online.apply(state, moment, values)
        return moment, scored.vector
