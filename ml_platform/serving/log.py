"""The prediction log: append-only JSON lines written by serving replicas, ingested by an asset.

Each replica process appends to its own file per day, so writers never interleave and the
ingesting asset can read files that are still growing (it keeps only complete lines).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any


class PredictionLogWriter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writer_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._handles: dict[tuple[str, str], Any] = {}

    def append(self, use_case: str, records: list[dict[str, Any]]) -> None:
        day = dt.datetime.now(dt.UTC).date().isoformat()
        key = (use_case, day)
        handle = self._handles.get(key)
        if handle is None:
            folder = self.directory / use_case / day
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"{self.writer_id}.jsonl").open("a", encoding="utf-8")
            self._handles[key] = handle
        handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        handle.flush()

    def close(self) -> None:
        """Close every file this writer has open (a later append opens its file again)."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def read_prediction_log(directory: Path, use_case: str) -> list[dict[str, Any]]:
    """Every complete record logged for ``use_case``, in file order."""
    records: list[dict[str, Any]] = []
    for path in sorted((directory / use_case).glob("*/*.jsonl")):
        text = path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line being written right now is skipped
        records += [json.loads(line) for line in complete.splitlines() if line]
    return records
