"""Preparing a platform home: folders, the Dagster instance config and child-process environments."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ml_platform.resources.platform import WAREHOUSE_POOL
from ml_platform.settings import Settings, settings_env

# The Dagster instance of a platform home. Every pool defaults to one slot, so assets of the
# `warehouse` pool run one at a time across all runs: DuckDB allows one writing process.
DAGSTER_YAML = f"""\
# Written by ml-platform; pools: {WAREHOUSE_POOL} (and any other) run one step at a time.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
"""


def prepare_home(settings: Settings) -> None:
    for folder in (settings.home, settings.dagster_home, settings.landing_dir, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    # Create the instance's storage now, once: processes started together would race to migrate it.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(settings.dagster_home)):
        pass


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
