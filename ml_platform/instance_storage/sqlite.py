"""Dagster's SQLite event log storage, its blocked pool claims retried every second."""

from __future__ import annotations

from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

from ml_platform.instance_storage import PromptClaims


class SqliteStorage(PromptClaims, SqliteEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> SqliteStorage:
        return cls(inst_data=inst_data, **config_value)
