"""dbt commands in the calling process, through dbt's programmatic API (``dbtRunner``).

A dbt CLI process spends seconds starting before it does any work (4.5-6.8 s here for a build
that takes 0.4 s in a process that has dbt loaded), and a Dagster step that runs dbt has it
loaded already: dagster-dbt imports it. Two things of dbt's are per process: its flags and adapters
(so commands take turns) and dbt-duckdb's open database, which would keep DuckDB's single-writer
lock on the warehouse after the command (so it is closed after each).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_platform.settings import DBT_PROJECT_DIR

# No colours in Dagster's compute logs, no usage pings from a machine that may have no internet.
GLOBAL_FLAGS = ("--no-use-colors", "--no-send-anonymous-usage-stats")

_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class DbtInvocation:
    """What one dbt command did: its structured events, each as the dict its JSON log line would
    hold (what dagster-dbt translates into asset events), and why it failed, if it did."""

    events: list[dict[str, Any]]
    error: str | None

    def raise_on_error(self) -> None:
        if self.error:
            raise DbtCommandError(self.error)


class DbtCommandError(Exception):
    """A dbt command failed: dbt's own error messages, and where its full log is."""


def invoke_dbt(args: Sequence[str], target: Path, *, project_dir: Path = DBT_PROJECT_DIR) -> DbtInvocation:
    """Run ``dbt <args>`` with its artifacts and log in ``target``. A failed command returns its
    error with the events it produced (a build's models may have run before a test failed)."""
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    events: list[dict[str, Any]] = []
    argv = [
        *GLOBAL_FLAGS,
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target),
    ]
    with _ONE_AT_A_TIME:
        try:
            result = dbtRunner(callbacks=[lambda event: events.append(msg_to_dict(event))]).invoke(argv)
        finally:
            _close_warehouse()
    if result.success:
        return DbtInvocation(events, None)
    errors = [e["info"]["msg"] for e in events if e["info"]["level"] == "error"]
    if result.exception is not None and not errors:
        errors.append(str(result.exception))
    reason = "; ".join(errors) or "no error message"
    command = " ".join(a for a in args if a != "--quiet")  # how much dbt logs is not the command
    return DbtInvocation(events, f"dbt {command} failed: {reason}. dbt's full log: {target / 'dbt.log'}")


def _close_warehouse() -> None:
    """dbt-duckdb keeps one database open per process across commands; close it and let DuckDB
    release the file (other processes write the warehouse between runs)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()
    gc.collect()  # DuckDB frees the file with the last reference to the database
