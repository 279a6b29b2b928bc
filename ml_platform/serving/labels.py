"""Labels posted to ``/v1/labels/{use_case}``: validated whole, then landed as one labels file.

A post becomes exactly what a user could have landed by hand (``<name>_<first day>_<last day>.csv``
in the use case's labels folder, written to a temporary name, fsynced and renamed; or held in the
landing inbox until the landing sensor writes that file, ``serving/inbox.py``), so the landing
sensor loads posted and landed labels the same way and nothing posted exists only in a process's
memory.

- Event labels: one label, a list, or ``{"labels": [...]}``; each item has the entity, the
  timestamp and the label column (as the task takes it: 1/0 or true/false, or a number). The
  file covers the days of its events.
- Anomaly windows: ``{"first_day": D1, "last_day": D2, "windows": [{entity, start, end}, ...]}``
  states every window of days D1..D2, as a landed file does (an empty list: those days had none).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from ml_platform.serving.inbox import LABELS, PostgresInbox, write_file
from ml_platform.settings import Settings
from ml_platform.spec import EventLabels, UseCaseSpec
from ml_platform.tasks import task_of
from ml_platform.timestamps import parse_timestamp


class LabelError(ValueError):
    """A posted label that cannot be used; the message names the item and field."""


@dataclass(frozen=True)
class Landed:
    accepted: int
    first_day: dt.date
    last_day: dt.date
    file: str  # the labels file's name in the use case's labels folder


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _object(item: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise LabelError(f"{where}: must be a JSON object with {', '.join(fields)}")
    unknown = sorted(set(item) - set(fields))
    if unknown:
        raise LabelError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(fields)}")
    for name in fields:
        if item.get(name) is None:
            raise LabelError(f"{where}: field '{name}' is required")
    return item


def _entity(spec: UseCaseSpec, item: dict[str, Any], where: str) -> str:
    value = item[spec.entity]
    if not isinstance(value, str) or not value:
        raise LabelError(f"{where}: field '{spec.entity}' must be a non-empty string")
    return value


def _moment(item: dict[str, Any], name: str, where: str) -> dt.datetime:
    try:
        return parse_timestamp(item[name])
    except ValueError as exc:
        raise LabelError(f"{where}: field '{name}' {exc}") from None


def _day(value: Any, name: str) -> dt.date:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise LabelError(f"field '{name}' must be a day (YYYY-MM-DD), got {value!r}")


def _check_days(spec: UseCaseSpec, first: dt.date, last: dt.date, what: str) -> None:
    start = dt.date.fromisoformat(spec.partitions_start)
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    if first < start or last > tomorrow:
        raise LabelError(
            f"{what} {first}..{last} lie outside the use case's days ({start}..{tomorrow}); "
            "labels of those days could never be joined"
        )


def event_labels(
    spec: UseCaseSpec, payload: Any
) -> tuple[list[tuple[str, dt.datetime, Any]], dt.date, dt.date]:
    if isinstance(payload, dict) and "labels" in payload:
        items = payload["labels"]
    else:
        items = payload if isinstance(payload, list) else [payload]
    if not isinstance(items, list) or not items:
        raise LabelError('send one label (a JSON object), a non-empty list of them, or {"labels": [...]}')
    fields, task = spec.label_columns, task_of(spec)
    rows = []
    for index, item in enumerate(items):
        where = f"label {index}"
        item = _object(item, where, fields)
        value = task.json_label(item[fields[2]])
        if value is None:
            raise LabelError(f"{where}: field '{fields[2]}' must be {task.label_rule()}")
        rows.append((_entity(spec, item, where), _moment(item, fields[1], where), value))
    days = [moment.date() for _, moment, _ in rows]
    first, last = min(days), max(days)
    _check_days(spec, first, last, "the labels' events")
    return rows, first, last


def window_labels(
    spec: UseCaseSpec, payload: Any
) -> tuple[list[tuple[str, dt.datetime, dt.datetime]], dt.date, dt.date]:
    shape = '{"first_day": "YYYY-MM-DD", "last_day": "YYYY-MM-DD", "windows": [...]}'
    if not isinstance(payload, dict) or not isinstance(payload.get("windows"), list):
        raise LabelError(f"send the windows of whole days: {shape}")
    unknown = sorted(set(payload) - {"first_day", "last_day", "windows"})
    if unknown:
        raise LabelError(f"unknown field(s) {', '.join(unknown)}; send {shape}")
    first, last = _day(payload.get("first_day"), "first_day"), _day(payload.get("last_day"), "last_day")
    if last < first:
        raise LabelError(f"field 'last_day' ({last}) is before first_day ({first})")
    _check_days(spec, first, last, "the days")
    begin = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    rows = []
    for index, item in enumerate(payload["windows"]):
        where = f"window {index}"
        item = _object(item, where, spec.label_columns)
        start, stop = _moment(item, "start", where), _moment(item, "end", where)
        if stop < start:
            raise LabelError(f"{where}: field 'end' is before start")
        if stop < begin or start >= end:
            raise LabelError(f"{where}: lies outside the days {first}..{last} it is posted for")
        rows.append((_entity(spec, item, where), start, stop))
    return rows, first, last


def example_labels(spec: UseCaseSpec, entity: str) -> dict[str, Any]:
    """A body ``POST /v1/labels/{use_case}`` takes, in the spec's kind of labels (on its first day)."""
    day = spec.partitions_start
    if isinstance(spec.labels, EventLabels):
        label = {spec.entity: entity, spec.timestamp: f"{day}T00:00:00Z", spec.labels.column: 1}
        return {"labels": [label]}
    window = {spec.entity: entity, "start": f"{day}T03:00:00Z", "end": f"{day}T03:30:00Z"}
    return {"first_day": day, "last_day": day, "windows": [window]}


class LabelLanding:
    """Lands posted labels of one use case as labels files, one per post (or, given an inbox, as
    its rows, which the landing sensor lands as the same files)."""

    def __init__(self, settings: Settings, spec: UseCaseSpec, inbox: PostgresInbox | None = None) -> None:
        self.spec = spec
        self.labels_dir = settings.labels_dir_for(spec.name)
        self.inbox = inbox
        started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        self.writer = f"posted-{started}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.sequence = itertools.count(1)

    def land(self, payload: Any) -> Landed:
        """Validate every label (all or none) and land them durably as one file."""
        if isinstance(self.spec.labels, EventLabels):
            rows, first, last = event_labels(self.spec, payload)
        else:
            rows, first, last = window_labels(self.spec, payload)
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(self.spec.label_columns)
        for row in rows:
            out.writerow([_iso(v) if isinstance(v, dt.datetime) else v for v in row])
        name = f"{self.writer}-{next(self.sequence)}_{first}_{last}.csv"
        if self.inbox is not None:
            self.inbox.put(self.spec.name, LABELS, name, text.getvalue().encode())
        else:
            write_file(self.labels_dir / name, text.getvalue().encode())
        return Landed(len(rows), first, last, name)
