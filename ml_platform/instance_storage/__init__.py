"""Dagster event log storages whose steps blocked on a pool ask for a slot again every second.

Dagster's open-source storages leave a blocked step's next try to a back-off that grows by a tenth
each try (1 s, 1.1 s, ... up to 15 s): a step that has waited a minute for the warehouse pool asks
again only every 6-7 s, and the pool stays idle that long after its holder let go. Dagster+ sets
the interval from its server; these set it to ``CLAIM_RETRY_S``. The home's ``dagster.yaml``
(``home.dagster_yaml``) names them; each is its Dagster class otherwise unchanged. One module per
database: a SQLite home's processes (every run worker) do not import dagster_postgres.
"""

from __future__ import annotations

from dagster._utils.concurrency import ConcurrencyClaimStatus

CLAIM_RETRY_S = 1.0


class PromptClaims:
    """Mixed in before a Dagster event log storage: a blocked claim is retried every second."""

    def claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None
    ) -> ConcurrencyClaimStatus:
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)  # type: ignore[misc]
        return status if status.is_claimed else status.with_sleep_interval(CLAIM_RETRY_S)
