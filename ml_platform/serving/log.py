"""The prediction log: append-only JSON lines written by serving replicas, ingested by an asset.

Each replica process appends to its own file per day, so writers never interleave and the
ingesting asset can read files that are still growing (it keeps only complete lines). A replica
writes a prediction's record before it answers it, so a killed replica or head loses no
answered prediction (the kernel holds the written lines; a machine crash can lose the last few
seconds, as nothing is fsynced per request). A record that cannot be written (a full disk)
raises ``PredictionLogError`` and leaves no partial line behind.

A shadow challenger's score is scored off the response path and logged afterwards as its own
line (``shadow_of`` = the prediction id), merged into its prediction when the log is read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

SHADOW_OF = "shadow_of"


class PredictionLogError(OSError):
    """The prediction log could not be written; nothing of the failed records is in it."""


class PredictionLogWriter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writer_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._files: dict[tuple[str, str], int] = {}

    def append(self, use_case: str, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        day = dt.datetime.now(dt.UTC).date().isoformat()
        path = self.directory / use_case / day / f"{self.writer_id}.jsonl"
        try:
            fd = self._files.get((use_case, day))
            if fd is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._files[(use_case, day)] = fd
            start = os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise PredictionLogError(exc.errno, f"prediction log {path}: {exc.strerror}") from None
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            if written:
                os.ftruncate(fd, start)  # no partial line: the next record starts a line of its own
            raise PredictionLogError(exc.errno, f"prediction log {path}: {exc.strerror}") from None

    def close(self) -> None:
        """Close every file this writer has open (a later append opens its file again)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


def read_prediction_log(directory: Path, use_case: str) -> list[dict[str, Any]]:
    """Every complete record logged for ``use_case``, in file order, with shadow scores merged in."""
    records: list[dict[str, Any]] = []
    shadows: dict[str, dict[str, Any]] = {}
    for path in sorted((directory / use_case).glob("*/*.jsonl")):
        text = path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line being written right now is skipped
        for line in complete.splitlines():
            if not line:
                continue
            record = json.loads(line)
            if SHADOW_OF in record:
                shadows[record[SHADOW_OF]] = record["shadow"]
            else:
                records.append(record)
    for record in records:
        if record["prediction_id"] in shadows:
            record["shadow"] = shadows[record["prediction_id"]]
    return records
