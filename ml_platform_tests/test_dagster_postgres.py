"""Dagster on PostgreSQL by configuration: one setting writes the home's dagster.yaml, and runs
started together, each in its own process, all succeed with their runs and the pool's one slot
in the database.

Not asserted, because it does not hold: that the pool admits one step at a time. Dagster's slot
claim let two steps in 6 ms apart in 1 of 6 runs of this test here (as on SQLite, which is why
every opening of the warehouse also takes a file lock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ml_platform.home import child_env
from ml_platform.resources.platform import STORAGE_VAR, WAREHOUSE_POOL
from ml_platform.settings import load_settings

from .conftest import fresh_database

pytestmark = pytest.mark.integration  # the local PostgreSQL


@pytest.fixture
def database_url():
    with fresh_database("dagster") as url:
        yield url


def _tables(url: str) -> set[str]:
    with psycopg.connect(url.replace("+psycopg2", "")) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {name for (name,) in rows}


def _init(home: Path, storage: str | None) -> str:
    """``ml-platform init`` as a user runs it; the home's dagster.yaml it leaves."""
    env = {"ML_PLATFORM_HOME": str(home), **({STORAGE_VAR: storage} if storage else {})}
    settings = load_settings(env)
    subprocess.run(
        [str(Path(sys.executable).with_name("ml-platform")), "init"],
        env=child_env(settings),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (settings.dagster_home / "dagster.yaml").read_text()


def test_one_setting_moves_dagster_storage_to_postgresql_and_back(tmp_path, database_url):
    config = _init(tmp_path / "home", database_url)
    assert f"env: {STORAGE_VAR}" in config and database_url not in config  # the file names the variable
    assert {"runs", "event_logs", "concurrency_slots", "jobs"} <= _tables(database_url)

    config = _init(tmp_path / "home", None)
    assert "postgres" not in config
    assert (tmp_path / "home" / "dagster" / "history" / "runs.db").exists()


# One run in a process of its own, as the daemon's run workers are: a step of the warehouse pool
# that writes when it held the pool into the given file.
RUN = """
import sys, time
import dagster as dg
from ml_platform.resources.platform import WAREHOUSE_POOL

@dg.asset(pool=WAREHOUSE_POOL)
def writes_the_warehouse() -> None:
    started = time.time()
    time.sleep(0.5)
    with open(sys.argv[1], "w") as out:
        out.write(f"{started} {time.time()}")

with dg.DagsterInstance.get() as instance:
    assert dg.materialize([writes_the_warehouse], instance=instance).success
"""


def test_ten_runs_started_together_all_succeed_on_postgresql(tmp_path, database_url):
    home = tmp_path / "home"
    _init(home, database_url)
    env = child_env(load_settings({"ML_PLATFORM_HOME": str(home), STORAGE_VAR: database_url}))
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, str(tmp_path / f"span_{i}")], env=env, stderr=subprocess.PIPE
        )
        for i in range(10)
    ]
    # Before `ml-platform init` created the pool's limit row, runs first using the pool together
    # raced to insert it and one failed on PostgreSQL (seen in CI).
    failed = [run.stderr.read().decode()[-2000:] for run in runs if run.wait(timeout=300) != 0]
    assert failed == []
    assert all((tmp_path / f"span_{i}").exists() for i in range(10))
    with psycopg.connect(database_url.replace("+psycopg2", "")) as conn:
        (runs_stored,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        query = "SELECT count(*) FROM concurrency_slots WHERE concurrency_key = %s"
        (slots,) = conn.execute(query, [WAREHOUSE_POOL]).fetchone()
    assert runs_stored == 10 and slots == 1
