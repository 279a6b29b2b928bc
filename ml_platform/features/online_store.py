"""The online store: the latest feature vector per entity, read by serving without the warehouse.

The embedded backend keeps one JSON snapshot per use case and replaces it atomically
(write a temporary file, then rename), so readers always see a complete snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP


@dataclass(frozen=True)
class FeatureVector:
    entity: str
    event_timestamp: str
    features: dict[str, float | None]


def _clean(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


class FileOnlineStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[int, dict[str, FeatureVector]]] = {}

    def path(self, use_case: str) -> Path:
        return self.directory / f"{use_case}.json"

    def write(self, use_case: str, vectors: pl.DataFrame, entity: str) -> int:
        """Replace the snapshot of ``use_case`` with ``vectors`` (one row per entity)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        feature_columns = [c for c in vectors.columns if c not in (entity, EVENT_TIMESTAMP)]
        snapshot = {
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
            "entities": {
                str(row[entity]): {
                    "event_timestamp": row[EVENT_TIMESTAMP].isoformat(),
                    "features": {c: _clean(row[c]) for c in feature_columns},
                }
                for row in vectors.iter_rows(named=True)
            },
        }
        target = self.path(use_case)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(snapshot))
        os.replace(tmp, target)
        return len(snapshot["entities"])

    def _snapshot(self, use_case: str) -> dict[str, FeatureVector]:
        path = self.path(use_case)
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        cached = self._cache.get(use_case)
        if cached and cached[0] == stamp:
            return cached[1]
        raw = json.loads(path.read_text())
        vectors = {
            key: FeatureVector(key, item["event_timestamp"], item["features"])
            for key, item in raw["entities"].items()
        }
        self._cache[use_case] = (stamp, vectors)
        return vectors

    def get(self, use_case: str, entity_id: str) -> FeatureVector | None:
        return self._snapshot(use_case).get(entity_id)

    def entities(self, use_case: str) -> list[str]:
        return sorted(self._snapshot(use_case))
