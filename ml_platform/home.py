"""Preparing a platform home: folders, the Dagster instance config and child-process environments."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ml_platform.resources.platform import STORAGE_VAR, WAREHOUSE_POOL
from ml_platform.settings import Settings, settings_env

# The Dagster instance of a platform home. Every pool defaults to one slot, so assets of the
# `warehouse` pool run one at a time across all runs: DuckDB allows one writing process.
WRITTEN_BY_US = "# Written by ml-platform"
DAGSTER_YAML = f"""\
{WRITTEN_BY_US}; pools: {WAREHOUSE_POOL} (and any other) run one step at a time.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
# The queue is looked at every second (Dagster's default is 5): a run asked for by a sensor or
# by automation starts that much sooner, and pool-bound runs follow each other within a second.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
# Event logs (and so the pools' slots) by storages that retry a blocked pool claim every second
# (ml_platform.instance_storage); runs and schedules in Dagster's own. In PostgreSQL, the file
# names the variable, so a password in the URL stays out of it.
SQLITE_STORAGE = """\
event_log_storage:
  module: ml_platform.instance_storage.sqlite
  class: SqliteStorage
  config:
    base_dir: {events}
"""
POSTGRES_URL = f"""\
  config:
    postgres_url:
      env: {STORAGE_VAR}
"""
POSTGRES_STORAGE = f"""\
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
{POSTGRES_URL}event_log_storage:
  module: ml_platform.instance_storage.postgres
  class: PostgresStorage
{POSTGRES_URL}schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
{POSTGRES_URL}"""


def dagster_yaml(settings: Settings) -> str:
    """The home's Dagster instance config for ``settings``."""
    if settings.dagster_storage_url:
        return DAGSTER_YAML + POSTGRES_STORAGE
    # Where Dagster's default SQLite storage keeps them: homes made before keep their history.
    events = json.dumps(str(settings.dagster_home / "history" / "runs"))  # quoted for YAML
    return DAGSTER_YAML + SQLITE_STORAGE.format(events=events)


def prepare_home(settings: Settings) -> None:
    for folder in (settings.home, settings.dagster_home, settings.landing_dir, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    # Ours is rewritten when the settings change it (switching the storage is one setting); a file
    # someone wrote by hand is theirs.
    current, wanted = (config.read_text() if config.exists() else None), dagster_yaml(settings)
    if current != wanted and (current is None or current.startswith(WRITTEN_BY_US)):
        config.write_text(wanted)
    # Create the instance's storage now, once: processes started together would race to migrate it.
    import dagster as dg

    if settings.dagster_storage_url:  # what dagster.yaml reads, in this process too
        os.environ.setdefault(STORAGE_VAR, settings.dagster_storage_url)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        # And the warehouse pool's limit row, once: runs that first use the pool together race to
        # insert it (on PostgreSQL the loser's transaction aborts and its run fails; seen in CI).
        instance.event_log_storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for processes we start: every setting, the Dagster home and the venv's tools."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **settings_env(settings),
        "DAGSTER_HOME": str(settings.dagster_home),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
    }
