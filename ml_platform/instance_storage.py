"""Dagster event log storages whose steps blocked on a pool ask for a slot again every second.

Dagster's open-source storages leave a blocked step's next try to a back-off that grows by a tenth
each try (1 s, 1.1 s, ... up to 15 s): a step that has waited a minute for the warehouse pool asks
again only every 6-7 s, and the pool stays idle that long after its holder let go. Dagster+ sets
the interval from its server; these set it to ``CLAIM_RETRY_S``. The home's ``dagster.yaml``
(``home.dagster_yaml``) names them; each is its Dagster class otherwise unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencyClaimStatus
from dagster_postgres.event_log.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

CLAIM_RETRY_S = 1.0


class _PromptClaims:
    def claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None
    ) -> ConcurrencyClaimStatus:
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)  # type: ignore[misc]
        return status if status.is_claimed else status.with_sleep_interval(CLAIM_RETRY_S)


class SqliteStorage(_PromptClaims, SqliteEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> SqliteStorage:
        return cls(inst_data=inst_data, **config_value)


class PostgresStorage(_PromptClaims, PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
