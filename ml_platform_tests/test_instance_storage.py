"""A step blocked on a pool asks for its slot again every second, on SQLite and on PostgreSQL,
instead of after Dagster's growing back-off (up to 15 s, the pool idle meanwhile)."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from ml_platform.home import prepare_home
from ml_platform.instance_storage import CLAIM_RETRY_S
from ml_platform.resources.platform import STORAGE_VAR, WAREHOUSE_POOL
from ml_platform.settings import load_settings

from .conftest import fresh_database


def assert_blocked_claims_retry_every_second(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    holder, waiter = f"run-{uuid.uuid4().hex}", f"run-{uuid.uuid4().hex}"
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, holder, "writes").is_claimed
    for _ in range(3):  # Dagster's back-off would grow with every try
        blocked = storage.claim_concurrency_slot(WAREHOUSE_POOL, waiter, "writes")
        assert not blocked.is_claimed and blocked.sleep_interval == CLAIM_RETRY_S
    storage.free_concurrency_slots_for_run(holder)
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, waiter, "writes").is_claimed
    storage.free_concurrency_slots_for_run(waiter)


def test_sqlite_home(tmp_path):
    settings = load_settings({"ML_PLATFORM_HOME": str(tmp_path / "home")})
    prepare_home(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert_blocked_claims_retry_every_second(instance)
        # Runs and their events where Dagster's default SQLite storage keeps them.
        assert (settings.dagster_home / "history" / "runs" / "index.db").exists()


@pytest.mark.integration  # the local PostgreSQL
def test_postgresql_home(tmp_path, monkeypatch):
    with fresh_database("claims") as url:
        settings = load_settings({"ML_PLATFORM_HOME": str(tmp_path / "home"), STORAGE_VAR: url})
        monkeypatch.setenv(STORAGE_VAR, url)
        prepare_home(settings)
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            assert_blocked_claims_retry_every_second(instance)
        assert not (settings.dagster_home / "history").exists()
